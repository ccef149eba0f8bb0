"""Auth and error paths over real HTTP/WS: REST 401s, WS close 3000/4000, expiry, bad frames, log, CLI."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from spec_oracle import assert_valid_server_events

from bridge.emulator.testing import RunningEmulator, running_emulator


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def emu(clock: Clock) -> AsyncIterator[RunningEmulator]:
    async with running_emulator(think_ms=0, reply_seconds=0.3, speed=20.0, clock=clock) as e:
        yield e
        assert_valid_server_events(e.server_events())


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def mint(http: aiohttp.ClientSession, emu: RunningEmulator, **body: Any) -> dict[str, Any]:
    async with http.post(f"{emu.base_url}/realtime/client_secrets", json=body, headers=auth(emu.api_key)) as r:
        assert r.status == 200, await r.text()
        return await r.json()


async def ws_first_and_close(ws: aiohttp.ClientWebSocketResponse) -> tuple[dict[str, Any], int | None, str]:
    msg = await ws.receive(timeout=5)
    first = json.loads(msg.data)
    closing = await ws.receive(timeout=5)
    assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    return first, ws.close_code, closing.extra or ""


async def test_rest_bad_and_missing_key(emu: RunningEmulator, http: aiohttp.ClientSession) -> None:
    for headers in (auth("sk-"), auth("not-a-key"), {}):
        for path in ("/realtime/client_secrets", "/realtime/calls", "/realtime/calls/rtc_x/hangup"):
            async with http.post(emu.base_url + path, headers=headers, data="v=0") as r:
                assert r.status == 401
                body = await r.json()
                assert body["error"]["code"] == "invalid_api_key"
                assert body["error"]["type"] == "invalid_request_error" and body["error"]["param"] is None
                assert "not-a-key" not in body["error"]["message"]  # keys are masked


async def test_client_secret_ttl_bounds_and_shape(emu: RunningEmulator, http: aiohttp.ClientSession) -> None:
    for seconds, code in ((5, "integer_below_min_value"), (7201, "integer_above_max_value")):
        body = {"expires_after": {"anchor": "created_at", "seconds": seconds}}
        async with http.post(f"{emu.base_url}/realtime/client_secrets", json=body, headers=auth(emu.api_key)) as r:
            assert r.status == 400 and (await r.json())["error"]["code"] == code
    secret = await mint(http, emu)
    assert secret["expires_at"] == int(emu.config.clock()) + 600
    assert secret["session"]["expires_at"] == 0 and secret["session"]["id"].startswith("sess_")


async def test_expired_ephemeral_key_cannot_start_sessions(
    emu: RunningEmulator, http: aiohttp.ClientSession, clock: Clock
) -> None:
    secret = await mint(http, emu, expires_after={"anchor": "created_at", "seconds": 10})
    ek = secret["value"]
    # before expiry one key opens several sessions; a session outlives its key
    async with http.ws_connect(f"{emu.ws_url}", headers=auth(ek)) as live:
        assert json.loads((await live.receive(timeout=5)).data)["type"] == "session.created"
        async with http.ws_connect(f"{emu.ws_url}", headers=auth(ek)) as second:
            assert json.loads((await second.receive(timeout=5)).data)["type"] == "session.created"
        clock.now += 11
        async with http.ws_connect(f"{emu.ws_url}", headers=auth(ek)) as ws:
            first, code, reason = await ws_first_and_close(ws)
            assert first["error"]["code"] == "invalid_api_key" and code == 3000
        async with http.post(f"{emu.base_url}/realtime/calls", data="v=0\r\nm=audio",
                             headers={**auth(ek), "Content-Type": "application/sdp"}) as r:  # fmt: skip
            assert r.status == 401
        await live.send_str(json.dumps({"type": "response.create"}))
        while (msg := json.loads((await live.receive(timeout=5)).data))["type"] != "response.done":
            pass
        assert msg["response"]["status"] == "completed"


async def test_ws_auth_and_shape_errors(emu: RunningEmulator, http: aiohttp.ClientSession) -> None:
    cases = [
        ({"headers": auth("sk-")}, "?model=gpt-realtime", "invalid_api_key", 3000,
         "invalid_request_error.invalid_api_key"),
        ({}, "?model=gpt-realtime", None, 3000, "invalid_request_error"),
        ({"headers": auth(emu.api_key)}, "", "missing_model", 4000, "invalid_request_error.missing_model"),
        ({"headers": auth(emu.api_key)}, "?model=davinci", "invalid_model", 4000,
         "invalid_request_error.invalid_model"),
        ({"headers": {**auth(emu.api_key), "OpenAI-Beta": "realtime=v1"}}, "?model=gpt-realtime",
         "beta_api_shape_disabled", 4000, "invalid_request_error.beta_api_shape_disabled"),
        ({"headers": auth(emu.api_key)}, "?call_id=rtc_nope", "invalid_value", 4000,
         "invalid_request_error.invalid_value"),
    ]  # fmt: skip
    for kwargs, query, code, close_code, reason in cases:
        async with http.ws_connect(emu.ws_url + query, **kwargs) as ws:  # the upgrade always succeeds
            first, got_code, got_reason = await ws_first_and_close(ws)
            assert first["type"] == "error" and first["error"]["code"] == code, first
            assert first["error"]["event_id"] is None
            assert (got_code, got_reason) == (close_code, reason)


async def test_ws_browser_subprotocol_auth(emu: RunningEmulator, http: aiohttp.ClientSession) -> None:
    protocols = ("realtime", f"openai-insecure-api-key.{emu.api_key}")
    async with http.ws_connect(emu.ws_url + "?model=gpt-realtime", protocols=protocols) as ws:
        assert ws.protocol == "realtime"
        assert json.loads((await ws.receive(timeout=5)).data)["type"] == "session.created"


async def test_ws_bad_frames_are_non_fatal(emu: RunningEmulator, http: aiohttp.ClientSession) -> None:
    async with http.ws_connect(emu.ws_url + "?model=gpt-realtime", headers=auth(emu.api_key)) as ws:
        assert json.loads((await ws.receive(timeout=5)).data)["type"] == "session.created"
        await ws.send_bytes(b"\x01\x02")
        await ws.send_str("{oops")
        await ws.send_str(json.dumps({"type": "session.update", "session": {"type": "realtime"}, "x": 1,
                                      "event_id": "evt_1"}))  # fmt: skip
        errs = [json.loads((await ws.receive(timeout=5)).data)["error"] for _ in range(3)]
        assert [(e["code"], e["event_id"]) for e in errs] == [
            ("invalid_event", None), ("invalid_json", None), ("unknown_parameter", "evt_1")]  # fmt: skip
        big = base64.b64encode(bytes(2 * 1024 * 1024)).decode()  # no message-size cap (PROTOCOL.md 3)
        await ws.send_str(json.dumps({"type": "input_audio_buffer.append", "audio": big}))
        await ws.send_str(json.dumps({"type": "session.update", "session": {"type": "realtime"}}))
        assert json.loads((await ws.receive(timeout=5)).data)["type"] == "session.updated"


async def test_ws_session_expiry_closes_1001(http: aiohttp.ClientSession) -> None:
    async with running_emulator(session_max_seconds=0.3) as emu:
        async with http.ws_connect(emu.ws_url + "?model=gpt-realtime", headers=auth(emu.api_key)) as ws:
            assert json.loads((await ws.receive(timeout=5)).data)["type"] == "session.created"
            first, code, reason = await ws_first_and_close(ws)
            assert first["error"]["code"] == "session_expired" and code == 1001
            assert "maximum duration" in reason


async def test_calls_validation_before_webrtc(emu: RunningEmulator, http: aiohttp.ClientSession) -> None:
    ek = (await mint(http, emu))["value"]
    async with http.post(f"{emu.base_url}/realtime/calls", data="not an sdp",
                         headers={**auth(ek), "Content-Type": "application/sdp"}) as r:  # fmt: skip
        assert r.status == 400 and (await r.json())["error"]["code"] == "invalid_offer"
    form = aiohttp.FormData()
    form.add_field("sdp", "v=0\r\nm=audio", content_type="application/sdp")
    form.add_field("session", json.dumps({"type": "realtime", "bogus": 1}), content_type="application/json")
    async with http.post(f"{emu.base_url}/realtime/calls", data=form, headers=auth(emu.api_key)) as r:
        assert r.status == 400 and (await r.json())["error"]["code"] == "unknown_parameter"
    async with http.post(f"{emu.base_url}/realtime/calls/rtc_none/hangup", headers=auth(emu.api_key)) as r:
        assert r.status == 404


async def test_jsonl_log_replaces_audio_with_byte_counts(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    path = tmp_path / "log" / "events.jsonl"
    async with running_emulator(log_path=str(path), think_ms=0, reply_seconds=0.2, speed=20.0) as emu:
        async with http.ws_connect(emu.ws_url + "?model=gpt-realtime", headers=auth(emu.api_key)) as ws:
            await ws.receive(timeout=5)
            await ws.send_str(json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(
                bytes(960)).decode()}))  # fmt: skip
            await ws.send_str(json.dumps({"type": "response.create"}))
            while json.loads((await ws.receive(timeout=5)).data)["type"] != "response.done":
                pass
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert {r["dir"] for r in records} == {"in", "out"}
    assert all({"t", "dir", "transport", "session", "event"} <= r.keys() for r in records)
    append = next(r for r in records if r["event"].get("type") == "input_audio_buffer.append")
    assert append["event"]["audio"] == 960 and append["transport"] == "ws"
    deltas = [r["event"]["delta"] for r in records if r["event"].get("type") == "response.output_audio.delta"]
    assert deltas and all(isinstance(d, int) for d in deltas) and sum(deltas) == int(0.2 * 24000) * 2


async def test_cli_serves_and_prints_base_url() -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "emulate", "--port", "0", "--think-ms", "0",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 15)).decode()
        assert line.startswith("bridge emulate: listening on http://127.0.0.1:")
        base = line.split()[4]
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{base}/realtime/client_secrets", json={}, headers=auth("sk-cli")) as r:
                assert r.status == 200
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()  # never leave an emulator behind (a failed run left one listening)
            await proc.wait()
            raise
    assert code == 0
