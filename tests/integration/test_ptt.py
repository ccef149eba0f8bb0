"""``bridge run --ptt``: a key (a line on stdin when it is not a terminal) starts and ends the user turn."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bridge.emulator.testing import running_emulator
from tests.audio import write_wav
from tests.helpers import start_bridge, transcript_lines, until


async def test_ptt_over_ws_commits_on_the_key_and_interrupts_the_reply(tmp_path) -> None:
    # the "microphone" is a steady tone: with turn_detection null only the key decides the turns
    write_wav(tmp_path / "in.wav", [("tone", 20)])
    transcript = tmp_path / "t.jsonl"
    async with running_emulator(think_ms=50, reply_seconds=3.0) as emu:
        proc = await start_bridge(
            *("run", "--ptt", "--transport", "ws", "--api-base", emu.base_url, "--duration", "8"),
            *("--input", str(tmp_path / "in.wav"), "--output", str(tmp_path / "out.wav")),
            *("--transcript", str(transcript)),
            env={"OPENAI_API_KEY": emu.api_key},
            stdin=True,
        )
        assert proc.stdin is not None

        def client_records(kind: str) -> list[dict[str, Any]]:
            return [r for r in emu.log_events() if r["dir"] == "in" and r["event"].get("type") == kind]

        def client_events(kind: str) -> list[dict[str, Any]]:
            return [r["event"] for r in client_records(kind)]

        def server_records(kind: str) -> list[dict[str, Any]]:
            return [r for r in emu.log_events() if r["dir"] == "out" and r["event"].get("type") == kind]

        def server_events(kind: str) -> list[dict[str, Any]]:
            return [r["event"] for r in server_records(kind)]

        await until(lambda: transcript.exists() and transcript.read_text(), "the session line")
        # the .wav microphone's first sample time (the session line says): press the key only once it has
        # produced 300 ms (15 frames), all of which must have been held back
        mic_start = transcript_lines(transcript)[0]["input_start_unix"]
        await until(lambda: time.time() >= mic_start + 0.3, "300 ms of microphone before the key")
        key_at = time.time()
        proc.stdin.write(b"\n")  # start talking
        await proc.stdin.drain()
        await until(lambda: len(client_events("input_audio_buffer.append")) >= 20, "400 ms of the turn")
        # the microphone was held back until the key: no append reached the server before it
        assert min(r["t"] for r in client_records("input_audio_buffer.append")) >= key_at
        proc.stdin.write(b"\n")  # send the turn
        await proc.stdin.drain()
        await until(lambda: server_events("response.output_audio.delta"), "reply audio")
        assert len(client_events("input_audio_buffer.commit")) == 1
        assert len(client_events("response.create")) == 1
        assert not server_events("input_audio_buffer.speech_started")  # no server VAD
        first_audio = server_records("response.output_audio.delta")[0]["t"]
        await until(lambda: time.time() - first_audio >= 0.6, "the 3 s reply to play for 0.6 s")
        proc.stdin.write(b"\n")  # talk over it: a manual barge-in
        await proc.stdin.drain()
        await until(lambda: client_events("conversation.item.truncate"), "truncate")
        assert client_events("response.cancel") or server_events("response.done")
        (truncate,) = client_events("conversation.item.truncate")
        assert 300 <= truncate["audio_end_ms"] <= 1500
        assert not [e for e in server_events("error") if e["error"].get("code") != "response_cancel_not_active"]
        await asyncio.wait_for(proc.communicate(), 15)
        assert proc.returncode == 0
    assert any(x["kind"] == "interrupted" for x in transcript_lines(transcript))
