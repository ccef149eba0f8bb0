"""``bridge run --ptt``: a key (a line on stdin when it is not a terminal) starts and ends the user turn."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

from bridge.emulator.testing import running_emulator
from tests.audio import write_wav


async def wait_for(pred, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def test_ptt_over_ws_commits_on_the_key_and_interrupts_the_reply(tmp_path) -> None:
    # the "microphone" is a steady tone: with turn_detection null only the key decides the turns
    write_wav(tmp_path / "in.wav", [("tone", 20)])
    transcript = tmp_path / "t.jsonl"
    async with running_emulator(think_ms=50, reply_seconds=3.0) as emu:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "BRIDGE_"))}
        env["OPENAI_API_KEY"] = emu.api_key
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bridge",
            "run",
            "--ptt",
            "--transport",
            "ws",
            "--api-base",
            emu.base_url,
            "--input",
            str(tmp_path / "in.wav"),
            "--output",
            str(tmp_path / "out.wav"),
            "--transcript",
            str(transcript),
            "--duration",
            "8",
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert proc.stdin is not None

        def client_events(kind: str) -> list[dict]:
            return [r["event"] for r in emu.log_events() if r["dir"] == "in" and r["event"].get("type") == kind]

        def server_events(kind: str) -> list[dict]:
            return [e for e in emu.server_events() if e.get("type") == kind]

        await wait_for(lambda: transcript.exists() and transcript.read_text(), "session")
        await asyncio.sleep(0.3)
        assert not client_events("input_audio_buffer.append"), "mic must be held back until the key"
        proc.stdin.write(b"\n")  # start talking
        await proc.stdin.drain()
        await asyncio.sleep(0.5)
        proc.stdin.write(b"\n")  # send the turn
        await proc.stdin.drain()
        await wait_for(lambda: server_events("response.output_audio.delta"), "reply audio")
        assert len(client_events("input_audio_buffer.commit")) == 1
        assert len(client_events("response.create")) == 1
        assert not server_events("input_audio_buffer.speech_started")  # no server VAD
        await asyncio.sleep(0.6)  # the 3 s reply is playing
        proc.stdin.write(b"\n")  # talk over it: a manual barge-in
        await proc.stdin.drain()
        await wait_for(lambda: client_events("conversation.item.truncate"), "truncate")
        assert client_events("response.cancel") or server_events("response.done")
        (truncate,) = client_events("conversation.item.truncate")
        assert 300 <= truncate["audio_end_ms"] <= 1500
        assert not [e for e in server_events("error") if e["error"].get("code") != "response_cancel_not_active"]
        await asyncio.wait_for(proc.communicate(), 15)
        assert proc.returncode == 0
    lines = [json.loads(x) for x in transcript.read_text().splitlines()]
    assert any(x["kind"] == "interrupted" for x in lines)
