"""``bridge run`` failure behaviour: one clear line and a non-zero exit; Ctrl-C exits 0 with the call hung up.

These run the real command in a subprocess against the emulator in this process (all on 127.0.0.1).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time

import pytest
from aiohttp import web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from bridge.emulator.testing import running_emulator
from bridge.rtc.loopback import loopback_candidates
from tests.audio import write_wav

SECRET = "sk-the-real-key-0123456789"


async def bridge(*args: str, env: dict[str, str] | None = None, timeout: float = 30) -> tuple[int, str, str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "BRIDGE_"))}
    full_env.update(env or {})
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge",
        "run",
        *args,
        env=full_env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def one_error_line(err: str) -> str:
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("transport", ["webrtc", "ws"])
async def test_rejected_key_is_one_line_and_never_printed(tmp_path, transport) -> None:
    async with running_emulator(api_keys=frozenset({SECRET})) as emu:
        code, out, err = await bridge(
            "--transport",
            transport,
            "--input",
            "null",
            "--output",
            "null",
            "--api-base",
            emu.base_url,
            "--transcript",
            str(tmp_path / "t.jsonl"),
            env={"OPENAI_API_KEY": "sk-wrong-key-abcdef"},
        )
    assert code == 1
    line = one_error_line(err)
    assert "rejected" in line and "invalid_api_key" in line, line
    assert "sk-wrong-key-abcdef" not in out + err


async def test_unreachable_server(tmp_path) -> None:
    code, _, err = await bridge(
        "--input", "null", "--output", "null", "--api-base", "http://127.0.0.1:9/v1", env={"OPENAI_API_KEY": SECRET}
    )
    assert code == 1
    assert "cannot reach 127.0.0.1:9" in one_error_line(err)


@pytest.mark.parametrize("flag", ["--input", "--output"])
async def test_no_such_device(tmp_path, flag) -> None:
    code, _, err = await bridge(
        flag, "no-such-device-xyz", "--api-base", "http://127.0.0.1:9/v1", env={"OPENAI_API_KEY": SECRET}
    )
    assert code == 1
    line = one_error_line(err)
    # with devices: "no input device matches ...: candidates"; without any (no sound server): says so
    assert any(
        w in line for w in ("no-such-device-xyz", "PortAudio", "no audio input devices", "no audio output devices")
    ), line


async def test_missing_wav_file(tmp_path) -> None:
    code, _, err = await bridge(
        "--input",
        str(tmp_path / "missing.wav"),
        "--output",
        "null",
        "--api-base",
        "http://127.0.0.1:9/v1",
        env={"OPENAI_API_KEY": SECRET},
    )
    assert code == 1 and "missing.wav" in one_error_line(err)


async def test_ice_that_never_connects_times_out_with_a_clear_error(tmp_path, monkeypatch) -> None:
    """A server whose SDP answer points at a peer that is gone: the data channel never opens."""
    monkeypatch.setattr("bridge.link.webrtc.OPEN_TIMEOUT_S", 2.0)

    async def secret(request: web.Request) -> web.Response:
        return web.json_response({"value": "ek_" + "0" * 32, "expires_at": int(time.time()) + 60, "session": {}})

    async def calls(request: web.Request) -> web.Response:
        offer = await request.text()
        ghost = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        with loopback_candidates():
            await ghost.setRemoteDescription(RTCSessionDescription(offer, "offer"))
            await ghost.setLocalDescription(await ghost.createAnswer())
        answer = ghost.localDescription.sdp
        await ghost.close()  # nobody will answer ICE checks
        return web.Response(
            status=201,
            text=answer,
            content_type="application/sdp",
            headers={"Location": "/v1/realtime/calls/rtc_ghost"},
        )

    app = web.Application()
    app.router.add_post("/v1/realtime/client_secrets", secret)
    app.router.add_post("/v1/realtime/calls", calls)

    async def hangup(request: web.Request) -> web.Response:
        return web.Response()

    app.router.add_post("/v1/realtime/calls/{id}/hangup", hangup)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]

    from bridge.app.run import amain
    from bridge.errors import ConnectError
    from tests.helpers import run_config

    write_wav(tmp_path / "in.wav", [("silence", 0.5)])
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    try:
        with pytest.raises(ConnectError, match="did not open within 2 s"):
            await amain(run_config(tmp_path, f"http://127.0.0.1:{port}/v1", "webrtc", 5))
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("transport", ["webrtc", "ws"])
async def test_ctrl_c_exits_0_with_call_hung_up_and_transcript_complete(tmp_path, transport) -> None:
    write_wav(tmp_path / "in.wav", [("silence", 0.3), ("tone", 0.6), ("silence", 10)])
    transcript = tmp_path / "t.jsonl"
    async with running_emulator(think_ms=50, reply_seconds=0.5) as emu:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "BRIDGE_"))}
        env["OPENAI_API_KEY"] = emu.api_key
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bridge",
            "run",
            "--transport",
            transport,
            "--api-base",
            emu.base_url,
            "--input",
            str(tmp_path / "in.wav"),
            "--output",
            str(tmp_path / "out.wav"),
            "--transcript",
            str(transcript),
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        deadline = time.monotonic() + 20
        while not (transcript.exists() and '"kind": "assistant"' in transcript.read_text()):
            assert time.monotonic() < deadline, "no assistant turn"
            await asyncio.sleep(0.05)
        if transport == "webrtc":
            assert len(emu.state.calls) == 1
        proc.send_signal(signal.SIGINT)
        out, err = await asyncio.wait_for(proc.communicate(), 15)
        assert proc.returncode == 0, err.decode()
        if transport == "webrtc":
            deadline = time.monotonic() + 5
            while emu.state.calls:  # hung up: the emulator forgot the call
                assert time.monotonic() < deadline, "call not hung up"
                await asyncio.sleep(0.02)
            hangups = [r for r in emu.log_events() if r["event"].get("type") == "call.hangup"]
            assert hangups, "no POST /hangup"
    lines = [json.loads(x) for x in transcript.read_text().splitlines()]  # every line complete JSON
    assert [x["kind"] for x in lines][:1] == ["session"]
    assert any(x["kind"] == "user" for x in lines) and any(x["kind"] == "assistant" for x in lines)
    assert b"Traceback" not in err


@pytest.mark.parametrize("transport", ["webrtc", "ws"])
async def test_server_ending_the_session_is_an_error_not_a_clean_exit(tmp_path, monkeypatch, transport) -> None:
    """With reconnecting off (--reconnect-for 0), the 60-minute cap (shortened here) or a dropped network:
    one clear error, transcript kept."""
    from bridge.app.run import amain
    from bridge.errors import ConnectError
    from tests.helpers import run_config

    write_wav(tmp_path / "in.wav", [("silence", 0.5)])
    async with running_emulator(session_max_seconds=1.5) as emu:
        monkeypatch.setenv("OPENAI_API_KEY", emu.api_key)
        with loopback_candidates(), pytest.raises(ConnectError, match="connection to the model closed"):
            await amain(run_config(tmp_path, emu.base_url, transport, 10, "--reconnect-for", "0"))
    lines = [json.loads(x) for x in (tmp_path / "t.jsonl").read_text().splitlines()]
    assert lines[0]["kind"] == "session" and lines[-1]["kind"] == "stats"
    assert any(x["kind"] == "error" and x["code"] == "session_expired" for x in lines)
