"""DRAFT for the lead (not collected: rename to test_aec_run.py once ``bridge run --aec`` exists).

End to end through the echo room: ``bridge run`` on the PulseAudio virtual devices against
``bridge emulate --behaviour speech``; the user's questions are played into ``micsink``; the echo room
(tests/echo_room.py) sends the speaker back into the microphone. Depends on the lead's restructuring:
``--aec on|off`` (and ``auto`` = on for two sound cards), wired with ``bridge.media.aec.attach(source, sink)``
after both devices started and ``Attachment.detach()`` at the end (it persists the measured delay).

- ``--aec off``: the replies interrupt themselves (the echo room is real): at least one ``interrupted`` line.
- ``--aec on``, both transports: three turns, three ``assistant`` lines, no ``interrupted`` line.
- ``--aec on``: a user barge-in 1.5 s into a reply still stops it (one ``interrupted`` line, and the
  ``latency`` line's ``bargein_ms`` under 300 ms).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bridge.bench import echo_sim as sim

try:
    from tests.echo_room import EchoRoom, echo_room  # noqa: F401
    from tests.pulse import Pulse, pulse, write_wav  # noqa: F401
except ModuleNotFoundError:
    from echo_room import EchoRoom, echo_room  # type: ignore[no-redef]  # noqa: F401
    from pulse import Pulse, pulse, write_wav  # type: ignore[no-redef]  # noqa: F401

pytestmark = [pytest.mark.pulseaudio, pytest.mark.timeout(180)]
QUESTIONS = (
    "What is the weather like in Berlin today?",
    "And how about tomorrow morning?",
    "Thank you, that is all for now.",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def _replies(path: Path) -> int:
    return len([x for x in _lines(path) if x["kind"] in ("assistant", "interrupted")])


def _wait(pred, timeout: float) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def _run(room: EchoRoom, tmp: Path, transport: str, aec: str, bargein_after_s: float | None = None) -> Path:
    port = _free_port()
    env = room.pulse.env(OPENAI_API_KEY="sk-aec-e2e", XDG_STATE_HOME=str(tmp / "state"))
    emu = subprocess.Popen(
        [sys.executable, "-m", "bridge", "emulate", "--behaviour", "speech", "--think-ms", "200", "--port", str(port)],
        env=env,
    )
    transcript = tmp / f"{transport}-{aec}.jsonl"
    run = subprocess.Popen(
        [sys.executable, "-m", "bridge", "run", "--transport", transport, "--aec", aec]
        + ["--api-base", f"http://127.0.0.1:{port}/v1", "--transcript", str(transcript)],
        env=env,
    )
    try:
        _wait(lambda: any(x["kind"] == "session" for x in _lines(transcript)), 20)
        for k, text in enumerate(QUESTIONS):
            wav = write_wav(tmp / f"q{k}.wav", sim.to_int16(sim.espeak(text, "en-gb+m3", peak=0.35)))
            done = _replies(transcript)
            subprocess.run(["paplay", "-d", "micsink", str(wav)], env=env, check=True)
            if bargein_after_s is not None and k == 0:
                time.sleep(bargein_after_s)
                stop = write_wav(tmp / "stop.wav", sim.to_int16(sim.espeak("Wait, stop.", "en-gb+m3", peak=0.35)))
                subprocess.run(["paplay", "-d", "micsink", str(stop)], env=env, check=True)
            _wait(lambda d=done: _replies(transcript) > d, 30)
            time.sleep(1.0)
    finally:
        for proc in (run, emu):
            proc.send_signal(2)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
    return transcript


def test_without_aec_replies_interrupt_themselves(echo_room: EchoRoom, tmp_path: Path) -> None:  # noqa: F811
    lines = _lines(_run(echo_room, tmp_path, "webrtc", "off"))
    assert any(x["kind"] == "interrupted" for x in lines)


@pytest.mark.parametrize("transport", ["webrtc", "ws"])
def test_with_aec_no_reply_is_cut_off_by_its_own_echo(echo_room: EchoRoom, tmp_path: Path, transport: str) -> None:  # noqa: F811
    lines = _lines(_run(echo_room, tmp_path, transport, "on"))
    assert [x["kind"] for x in lines].count("assistant") >= len(QUESTIONS)
    assert not [x for x in lines if x["kind"] == "interrupted"]


def test_with_aec_a_user_barge_in_still_stops_the_reply(echo_room: EchoRoom, tmp_path: Path) -> None:  # noqa: F811
    lines = _lines(_run(echo_room, tmp_path, "webrtc", "on", bargein_after_s=1.5))
    assert [x for x in lines if x["kind"] == "interrupted"]
    bargein = [float(x["bargein_ms"]) for x in lines if x["kind"] == "latency" and x.get("bargein_ms") is not None]
    assert bargein and float(np.median(bargein)) < 300
