"""``bridge serve --agents``: a browser-like aiortc peer posts its offer to ``/api/call``; the server creates
the call with the API key, attaches the agents over the sideband and writes the call's transcript.

Against the real emulator on 127.0.0.1 with the Korean set's ``script:`` behaviour, which walks
triage -> korean_20s -> empathetic with one tool call. Checked from the emulator's side (the instructions
in force when each response started, the tool outputs in its conversation) and from the server's (its
transcript file, its task set, its answers never carrying the API key).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer
from aiortc import RTCConfiguration, RTCDataChannel, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack

from bridge.agents import load_agents
from bridge.emulator.testing import RunningEmulator, running_emulator
from bridge.errors import ConfigError
from bridge.rtc.loopback import loopback_candidates
from bridge.server import ServerSettings, make_app
from bridge.server.app import CALLS
from bridge.server.settings import from_args as build_settings
from tests.helpers import active_agents

ROOT = Path(__file__).resolve().parents[2]
AGENTS = ROOT / "examples" / "agents" / "korean" / "agents.toml"
SCRIPT = ROOT / "examples" / "agents" / "korean" / "emulator_script.toml"
ACCESS = "serve-agents-access-token"
USER_TURNS = {  # response index -> what the user types before it
    0: "안녕하세요, 저는 스물네 살이에요.",
    2: "사실 요즘 취업 준비 때문에 너무 불안하고 우울해요.",
    4: "한 70 정도요.",
}
EXPECTED_AGENT = ["triage", "korean_20s", "korean_20s", "empathetic", "empathetic", "empathetic"]


async def until(pred: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def count(emu: RunningEmulator, event_type: str) -> int:
    return sum(1 for e in emu.server_events() if e["type"] == event_type)


@contextlib.asynccontextmanager
async def serving(emu: RunningEmulator, tmp_path: Path, **kw: Any) -> AsyncIterator[TestClient]:
    settings = ServerSettings(
        api_key=emu.api_key,
        api_base=emu.base_url,
        agents=load_agents(AGENTS),
        transcripts_dir=tmp_path / "transcripts",
        turn_detection=None,  # text turns only: the test drives every response
        access_token=ACCESS,
        **kw,
    )
    client = TestClient(TestServer(make_app(settings), host="127.0.0.1"))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


class Browser:
    """What the page does: data channel + mic track before the offer, offer to /api/call, answer back."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.channel: RTCDataChannel = self.pc.createDataChannel("oai-events")
        self.pc.addTrack(AudioStreamTrack())  # a browser's microphone, silent
        self.events: list[dict[str, Any]] = []
        self.channel.on("message", lambda m: self.events.append(json.loads(m)))
        self.headers = {
            "Authorization": f"Bearer {ACCESS}",
            "Origin": f"http://127.0.0.1:{client.port}",
            "Content-Type": "application/sdp",
        }

    async def offer(self) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription.sdp

    async def call(self) -> ClientResponse:
        return await self.client.post("/api/call", data=await self.offer(), headers=self.headers)

    async def answer(self, resp: ClientResponse) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(await resp.text(), "answer"))
        opened = asyncio.Event()
        if self.channel.readyState == "open":
            opened.set()
        self.channel.on("open", opened.set)
        await asyncio.wait_for(opened.wait(), 10)

    def say(self, text: str) -> None:
        item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
        self.channel.send(json.dumps({"type": "conversation.item.create", "item": item}))
        self.channel.send(json.dumps({"type": "response.create"}))

    async def hangup(self, call_id: str) -> ClientResponse:
        return await self.client.post(f"/api/call/{call_id}/hangup", headers=self.headers)


def transcript_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()] if path.exists() else []


@pytest.fixture
async def emu() -> AsyncIterator[RunningEmulator]:
    async with running_emulator(behaviour=f"script:{SCRIPT}", think_ms=20, speed=20.0) as running:
        yield running


async def test_browser_call_runs_the_agents_on_the_server(
    emu: RunningEmulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    agents = load_agents(AGENTS)
    seen: list[str] = []  # every body and header we got back, for the key check
    with loopback_candidates():
        async with serving(emu, tmp_path) as client:
            config = await client.get("/api/config")
            body = await config.json()
            seen.append(json.dumps(body))
            assert body["agents"] == {"start": "triage", "names": ["triage", "korean_20s", "empathetic"]}
            browser = Browser(client)
            try:
                resp = await browser.call()
                answer = await resp.text()
                seen += [answer, json.dumps(dict(resp.headers))]
                assert resp.status == 201, answer
                assert resp.content_type == "application/sdp" and answer.startswith("v=0")
                call_id = resp.headers["X-Call-Id"]
                assert resp.headers["Location"] == f"/api/call/{call_id}"
                assert call_id in emu.state.calls
                # The agents were listening before the page got its answer.
                assert count(emu, "session.updated") >= 1
                (engine,) = emu.state.engines
                assert engine.session["instructions"] == agents.instructions_for("triage")
                assert len(client.app[CALLS]) == 1 and client.app[CALLS].calls[call_id].task is not None

                await browser.answer(resp)
                for index, text in USER_TURNS.items():
                    await until(lambda i=index: count(emu, "response.done") >= i, f"response {index}")
                    # WebRTC: the previous reply was played out before the user "speaks" again.
                    await until(lambda i=index: count(emu, "output_audio_buffer.stopped") >= i // 2, "reply heard")
                    browser.say(text)
                await until(lambda: count(emu, "response.done") >= 6, "all six responses")

                # The emulator's view: the next reply always came from the new agent, the tool result
                # reached the model, and the session ended with empathetic's tools.
                errors = [e for e in emu.server_events() if e["type"] == "error"]
                assert not errors, errors
                assert active_agents(emu, agents) == EXPECTED_AGENT
                outputs = {
                    e["item"]["call_id"]: json.loads(e["item"]["output"])
                    for e in emu.server_events()
                    if e["type"] == "conversation.item.done" and e["item"].get("type") == "function_call_output"
                }
                assert outputs["call_handoff_korean"] == {"ok": True, "agent": "korean_20s"}
                assert outputs["call_handoff_empathetic"] == {"ok": True, "agent": "empathetic"}
                assert outputs["call_score_before"]["score"] == 70 and outputs["call_score_before"]["recorded"]
                tools = [t["name"] for t in engine.session["tools"]]
                assert tools == [t["name"] for t in agents.tools_for("empathetic")]
                assert engine.session["audio"]["output"]["voice"] == "marin"
                # The page sees the function calls on its own data channel (its history drawer's source).
                names = [e["name"] for e in browser.events if e["type"] == "response.function_call_arguments.done"]
                assert names == ["transfer_to_korean_20s", "transfer_to_empathetic", "record_emotion_score"]

                # The server's transcript of the browser session.
                (path,) = (tmp_path / "transcripts").glob(f"*-{call_id}.jsonl")
                await until(
                    lambda: sum(x["kind"] == "assistant" for x in transcript_lines(path)) >= 3, "server transcript"
                )
                lines = transcript_lines(path)
                assert lines[0]["kind"] == "session" and lines[0]["call_id"] == call_id
                assert lines[0]["via"] == "sideband"
                handoffs = [(x["from"], x["to"]) for x in lines if x["kind"] == "handoff"]
                assert handoffs == [("triage", "korean_20s"), ("korean_20s", "empathetic")]
                (tool,) = [x for x in lines if x["kind"] == "tool"]
                assert tool["name"] == "record_emotion_score" and tool["ok"] and tool["agent"] == "empathetic"
                said = [x["text"] for x in lines if x["kind"] == "assistant"]
                assert any("스물넷" in t for t in said) and any("숨을" in t for t in said)

                # The page ends the call through the server; the sideband task ends with it.
                task = next(iter(client.app[CALLS].calls.values())).task
                assert task is not None
                t0 = time.monotonic()
                hung = await browser.hangup(call_id)
                seen.append(await hung.text())
                assert hung.status == 200
                assert task.done() and not task.cancelled(), "the sideband should end because the call ended"
                hangup_s = time.monotonic() - t0
                assert call_id not in emu.state.calls
                assert len(client.app[CALLS]) == 0
                again = await browser.hangup(call_id)
                assert again.status == 404 and (await again.json())["error"]["code"] == "call_not_found"
            finally:
                await browser.pc.close()
    assert hangup_s < 3.0, hangup_s
    # The API key never reached the client, nor any log line.
    for text in seen:
        assert emu.api_key not in text and emu.api_key[-8:] not in text
    for record in caplog.records:
        assert emu.api_key not in record.getMessage()
    assert any(path.name in r.getMessage() for r in caplog.records), "the transcript path is logged"


async def test_call_is_guarded_like_minting(emu: RunningEmulator, tmp_path: Path) -> None:
    with loopback_candidates():
        async with serving(emu, tmp_path, max_calls=1, rate_burst=2, rate_period=60.0) as client:
            browser = Browser(client)
            try:
                offer = await browser.offer()
                h = browser.headers

                async def post(headers: dict[str, str], data: str | bytes = offer) -> tuple[int, str]:
                    resp = await client.post("/api/call", data=data, headers=headers)
                    return resp.status, (await resp.json())["error"]["code"]

                assert await post({**h, "Origin": "https://evil.example"}) == (403, "origin_not_allowed")
                assert await post({k: v for k, v in h.items() if k != "Authorization"}) == (
                    401,
                    "access_token_required",
                )
                assert await post({**h, "Content-Length": "70000"}, b"v=0\r\n" + b"a" * 69_995) == (
                    413,
                    "request_too_large",
                )
                assert await post({**h, "Content-Type": "text/plain"}) == (415, "sdp_required")
                assert await post(h, "hello") == (400, "invalid_offer")
                assert not emu.state.calls  # nothing above reached the upstream
                # The per-client rate limit is the mint's (2 in a burst here; the 415 and the 400 spent them).
                assert await post(h) == (429, "rate_limited")
                # Hangup is never rate limited, but is origin/token guarded and only for our own calls.
                bad = await client.post("/api/call/rtc_x/hangup", headers={**h, "Origin": "https://evil.example"})
                assert bad.status == 403
                assert (await client.post("/api/call/rtc_x/hangup", headers=h)).status == 404
            finally:
                await browser.pc.close()


async def test_concurrent_call_cap_and_shutdown(emu: RunningEmulator, tmp_path: Path) -> None:
    with loopback_candidates():
        async with serving(emu, tmp_path, max_calls=1) as client:
            first, second = Browser(client), Browser(client)
            try:
                resp = await first.call()
                assert resp.status == 201, await resp.text()
                call_id = resp.headers["X-Call-Id"]
                busy = await second.call()
                assert busy.status == 429 and (await busy.json())["error"]["code"] == "too_many_calls"
                assert busy.headers["Retry-After"]
                assert len(emu.state.calls) == 1
                task = next(iter(client.app[CALLS].calls.values())).task
                assert task is not None
                await client.close()  # server shutdown: calls hung up, sidebands ended and awaited
                assert task.done()
                assert call_id not in emu.state.calls
                (path,) = (tmp_path / "transcripts").glob(f"*-{call_id}.jsonl")
                assert transcript_lines(path)[0]["kind"] == "session"
            finally:
                await first.pc.close()
                await second.pc.close()


async def test_plain_flow_stays_without_agents(emu: RunningEmulator) -> None:
    settings = ServerSettings(api_key=emu.api_key, api_base=emu.base_url)
    client = TestClient(TestServer(make_app(settings), host="127.0.0.1"))
    await client.start_server()
    try:
        assert (await (await client.get("/api/config")).json())["agents"] is None
        assert (await client.post("/api/call", data="v=0", headers={"Content-Type": "application/sdp"})).status == 404
        assert (await client.post("/api/client-secret", json={})).status == 200
    finally:
        await client.close()


def test_bad_agents_file_is_one_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "agents.toml"
    bad.write_text('start = "ghost"\n[[agents]]\nname = "a"\ninstructions = "x"\nhandoffs = ["nobody"]\n')
    args = type("Args", (), {"allow_origin": None, "model": None, "voice": None, "instructions": None})()
    args.key_ttl, args.access_token, args.agents = 60, None, str(bad)
    with pytest.raises(ConfigError, match="2 problems"):
        build_settings(args, "sk-x", "http://127.0.0.1:1/v1", offline=False)
    proc = subprocess.run(
        [sys.executable, "-m", "bridge", "serve", "--port", "0", "--offline", "--agents", str(bad)],
        cwd=tmp_path, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert "bridge serve: error: agents file" in proc.stderr and "'ghost'" in proc.stderr
    assert "Traceback" not in proc.stderr


async def test_a_resumed_call_starts_with_the_agent_that_was_active(emu: RunningEmulator, tmp_path: Path) -> None:
    """The page reconnects a dropped call with ``X-Resume-Call: <old call id>``: the new call starts with the
    old call's active agent (its instructions and tools), not the start agent; an unknown call, or one of
    another identity, starts with the start agent."""
    agents = load_agents(AGENTS)
    with loopback_candidates():
        async with serving(emu, tmp_path) as client:
            calls = client.app[CALLS]
            first = Browser(client)
            try:
                resp = await first.call()
                assert resp.status == 201, await resp.text()
                old_id = resp.headers["X-Call-Id"]
                await first.answer(resp)
                first.say(USER_TURNS[0])
                await until(lambda: calls.calls[old_id].controller.current.name == "korean_20s", "the handoff")
                assert (await first.hangup(old_id)).status == 200  # the old call is over, as after a drop
            finally:
                await first.pc.close()
            assert old_id not in calls.calls

            second = Browser(client)
            second.headers["X-Resume-Call"] = old_id
            try:
                resp = await second.call()
                assert resp.status == 201, await resp.text()
                new_id = resp.headers["X-Call-Id"]
                assert new_id != old_id and calls.calls[new_id].controller.current.name == "korean_20s"
                created = [e for e in emu.server_events() if e["type"] == "session.created"]
                assert created[-1]["session"]["instructions"] == agents.instructions_for("korean_20s")
                tools = [t["name"] for t in created[-1]["session"]["tools"]]
                assert tools == [t["name"] for t in agents.tools_for("korean_20s")]
            finally:
                await second.pc.close()

            third = Browser(client)
            third.headers["X-Resume-Call"] = "rtc_nobody_ran_this"
            try:
                resp = await third.call()
                assert resp.status == 201, await resp.text()
                assert calls.calls[resp.headers["X-Call-Id"]].controller.current.name == "triage"
            finally:
                await third.pc.close()

            # A kiosk may only resume its own calls; the shared token only calls made without a kiosk token.
            calls.recent.remember("rtc_of_a_kiosk", "empathetic", "shop-1")
            assert await calls.resumed_agent("rtc_of_a_kiosk", "shop-1") == "empathetic"
            assert await calls.resumed_agent("rtc_of_a_kiosk", None) is None
            assert await calls.resumed_agent("rtc_of_a_kiosk", "shop-2") is None
            assert await calls.resumed_agent(old_id, "shop-1") is None
            assert await calls.resumed_agent("../etc", None) is None
