"""Open speakers, end to end: ``bridge run`` on the PulseAudio virtual devices in an echo room.

The echo room (tests/echo_room.py) sends what the virtual speaker plays back into the virtual microphone
(-9 dB after ~30 ms, two reflections). ``bridge emulate --behaviour speech`` answers each question with a
spoken sentence; its server VAD takes anything above -40 dBFS for the user. The user's questions are played
into ``micsink`` (mixed with the echo); :class:`Speaker` listens to ``spk.monitor`` to know when a reply has
finished playing.

- ``--aec off``: the replies interrupt themselves (the echo room is real).
- the default (``auto``: on for two sound cards), both transports: three questions, three whole replies, no
  ``interrupted`` line; the first run calibrates and persists the echo delay; the session asks for far-field
  noise reduction.
- with echo cancellation, a user barge-in over a reply (while its echo plays) still stops it, fast.
- a long echo path (700 ms) is found by the first run's calibration.
- a kiosk (the speaker opened per call): two visitors, two whole replies each, the canceller paused between
  calls and resumed with what it learnt.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bridge.bench import echo_sim as sim
from bridge.bench.echo_room import RoomSpec

try:
    from tests.echo_room import EchoRoom, echo_room  # noqa: F401
    from tests.helpers import clean_env
    from tests.pulse import Pulse, pulse, write_wav  # noqa: F401
except ModuleNotFoundError:  # plain `pytest` puts tests/ on sys.path, not the repo
    from echo_room import EchoRoom, echo_room  # type: ignore[no-redef]  # noqa: F401
    from helpers import clean_env  # type: ignore[no-redef]
    from pulse import Pulse, pulse, write_wav  # type: ignore[no-redef]  # noqa: F401

pytestmark = [pytest.mark.pulseaudio, pytest.mark.timeout(240)]
QUESTIONS = (
    "What is the weather like in Berlin today?",
    "And how about tomorrow morning?",
    "Thank you, that is all for now.",
)
VOICE = "en-gb+m3"
QUIET_DBFS = -50.0


class Speaker:
    """What the virtual speaker plays (``parec`` on its monitor, 16 kHz): when it was last loud."""

    def __init__(self, env: dict[str, str]) -> None:
        self.last_loud = time.monotonic()
        self.loud_blocks = 0
        self._proc = subprocess.Popen(
            ["parec", "-d", "spk.monitor", "--raw", "--format=s16le", "--rate=16000", "--channels=1"],
            env=env,
            stdout=subprocess.PIPE,
        )
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        floor = 32768 * 10 ** (QUIET_DBFS / 20)
        while block := self._proc.stdout.read(640):  # 20 ms
            pcm = np.frombuffer(block[: len(block) // 2 * 2], dtype=np.int16).astype(np.float64)
            if len(pcm) and float(np.sqrt(np.mean(pcm**2))) > floor:
                self.last_loud = time.monotonic()
                self.loud_blocks += 1

    def quiet_for(self) -> float:
        return time.monotonic() - self.last_loud

    def close(self) -> None:
        self._proc.terminate()
        self._proc.wait(5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.endswith("}")]


def _replies(path: Path) -> int:
    return len([x for x in _lines(path) if x["kind"] in ("assistant", "interrupted")])


def _wait(pred: Callable[[], object], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f} s waiting for {what}"
        time.sleep(0.05)


def _say(tmp: Path, name: str, text: str, env: dict[str, str]) -> None:
    wav = write_wav(tmp / f"{name}.wav", sim.to_int16(sim.espeak(text, VOICE, peak=0.35)))
    subprocess.run(["paplay", "-d", "micsink", str(wav)], env=env, check=True, timeout=30)


@pytest.fixture
def emulator(pulse: Pulse) -> Iterator[str]:  # noqa: F811
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bridge", "emulate", "--behaviour", "speech", "--think-ms", "200"]
        + ["--port", str(port)],
        env=clean_env(**pulse.env()),
        stdout=subprocess.DEVNULL,
    )
    try:
        _wait(lambda: _port_open(port), "the emulator", 20)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        proc.wait(10)


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _conversation(
    room: EchoRoom, api: str, tmp: Path, transport: str, *aec: str, bargein_after_s: float | None = None
) -> Path:
    """Ask :data:`QUESTIONS` (each after the last reply has finished playing); the transcript."""
    env = clean_env(**room.pulse.env(), OPENAI_API_KEY="sk-aec-e2e", XDG_STATE_HOME=str(tmp / "state"))
    transcript = tmp / f"{transport}.jsonl"
    run = subprocess.Popen(
        [sys.executable, "-m", "bridge", "run", "--transport", transport, *aec, "-v"]
        + ["--api-base", api, "--transcript", str(transcript)],
        env=env,
        stderr=(tmp / f"{transport}.log").open("w"),
    )
    speaker = Speaker(env)
    try:
        _wait(lambda: any(x["kind"] == "session" for x in _lines(transcript)), "the session", 30)
        questions = QUESTIONS[:1] if bargein_after_s is not None else QUESTIONS
        for k, text in enumerate(questions):
            done = _replies(transcript)
            loud = speaker.loud_blocks
            _say(tmp, f"q{k}", text, env)
            if bargein_after_s is not None:
                _wait(lambda lb=loud: speaker.loud_blocks > lb + 5, "the reply to play", 30)
                time.sleep(bargein_after_s)  # the user talks over the reply 1 s into it (the test's script)
                _say(tmp, "stop", "Wait, stop.", env)
            _wait(lambda d=done: _replies(transcript) > d, f"a reply to question {k + 1}", 40)
            _wait(lambda: speaker.quiet_for() > 0.8, "the reply to finish playing", 40)
    finally:
        speaker.close()
        run.send_signal(2)
        try:
            run.wait(15)
        except subprocess.TimeoutExpired:
            run.kill()
    assert run.returncode == 0, (tmp / f"{transport}.log").read_text()[-2000:]
    return transcript


def test_without_aec_the_replies_interrupt_themselves(echo_room: EchoRoom, emulator: str, tmp_path: Path) -> None:  # noqa: F811
    lines = _lines(_conversation(echo_room, emulator, tmp_path, "webrtc", "--aec", "off"))
    assert [x for x in lines if x["kind"] == "interrupted"], [x["kind"] for x in lines]


@pytest.mark.parametrize("transport", ["webrtc", "ws"])
def test_with_aec_no_reply_cuts_itself_off(echo_room: EchoRoom, emulator: str, tmp_path: Path, transport: str) -> None:  # noqa: F811
    lines = _lines(_conversation(echo_room, emulator, tmp_path, transport))  # --aec auto: two sound cards
    kinds = [x["kind"] for x in lines]
    assert kinds.count("assistant") == len(QUESTIONS), kinds
    assert "interrupted" not in kinds, kinds
    assert kinds.count("user") == len(QUESTIONS), kinds  # each question heard once: no echo taken for a turn
    session = next(x for x in lines if x["kind"] == "session")
    assert str(session["aec"]).startswith("aec3"), session
    stats = next(x for x in lines if x["kind"] == "stats")
    assert stats["aec"]["erle_db"] is None or stats["aec"]["erle_db"] > 15, stats["aec"]
    assert stats["aec"]["converged"], stats["aec"]
    # the first run on these devices calibrated and saved the echo delay for the next one
    saved = json.loads((tmp_path / "state" / "bridge" / "aec.json").read_text())["pairs"]
    assert len(saved) == 1 and 0 < next(iter(saved.values()))["delay_ms"] < 200, saved
    log = (tmp_path / f"{transport}.log").read_text()
    assert "echo cancellation calibrated" in log, log[-2000:]


@pytest.mark.parametrize("echo_room", [RoomSpec(delay_ms=700.0, reflections=((15.0, -16.0),))], indirect=True)
def test_a_long_echo_path_is_found_by_the_first_run(echo_room: EchoRoom, emulator: str, tmp_path: Path) -> None:  # noqa: F811
    """700 ms (Bluetooth, a PipeWire graph): beyond AEC3's own reach; the calibration finds it and the
    reference is pre-aligned, so even the first reply does not cut itself off."""
    lines = _lines(_conversation(echo_room, emulator, tmp_path, "webrtc"))
    kinds = [x["kind"] for x in lines]
    assert kinds.count("assistant") == len(QUESTIONS) and "interrupted" not in kinds, kinds
    stats = next(x for x in lines if x["kind"] == "stats")
    assert 650 < stats["aec"]["delay_ms"] < 800 and stats["aec"]["prealign_ms"] > 500, stats["aec"]


def test_with_aec_a_user_barge_in_still_stops_the_reply(echo_room: EchoRoom, emulator: str, tmp_path: Path) -> None:  # noqa: F811
    lines = _lines(_conversation(echo_room, emulator, tmp_path, "webrtc", bargein_after_s=1.0))
    kinds = [x["kind"] for x in lines]
    assert "interrupted" in kinds, kinds
    bargein = [float(x["bargein_ms"]) for x in lines if x["kind"] == "latency" and x.get("bargein_ms") is not None]
    assert bargein and max(bargein) < 300, bargein


def test_a_kiosk_on_open_speakers_serves_two_visitors(echo_room: EchoRoom, emulator: str, tmp_path: Path) -> None:  # noqa: F811
    env = clean_env(**echo_room.pulse.env(), OPENAI_API_KEY="sk-aec-kiosk", XDG_STATE_HOME=str(tmp_path / "state"))
    port = _free_port()
    calls = tmp_path / "calls"
    kiosk = subprocess.Popen(
        [sys.executable, "-m", "bridge", "run", "--kiosk", "--api-base", emulator, "--hangup-after", "2"]
        + ["--health-port", str(port), "--transcript-dir", str(calls), "-v"],
        env=env,
        stderr=(tmp_path / "kiosk.log").open("w"),
    )
    speaker = Speaker(env)

    def call(k: int) -> list[dict[str, Any]]:
        files = sorted(calls.glob("kiosk-*.jsonl"))
        return _lines(files[k]) if len(files) > k else []

    def health() -> dict[str, Any]:
        try:
            return dict(json.loads(_get(f"http://127.0.0.1:{port}/healthz")))
        except OSError:
            return {}

    try:
        _wait(lambda: health().get("state") == "idle", "the kiosk to listen", 40)
        for visitor in range(2):
            for k, text in enumerate(QUESTIONS[:2]):
                replies = len([x for x in call(visitor) if x["kind"] in ("assistant", "interrupted")])
                _say(tmp_path, f"v{visitor}q{k}", text, env)
                _wait(
                    lambda v=visitor, r=replies: (
                        len([x for x in call(v) if x["kind"] in ("assistant", "interrupted")]) > r
                    ),
                    f"visitor {visitor + 1}'s reply {k + 1}",
                    40,
                )
                _wait(lambda: speaker.quiet_for() > 0.8, "the reply to finish playing", 40)
            _wait(lambda v=visitor: any(x["kind"] == "stats" for x in call(v)), "the hang-up", 20)
            _wait(lambda: health().get("state") == "idle", "idle again", 20)
        metrics = _get(f"http://127.0.0.1:{port}/metrics")
    finally:
        speaker.close()
        kiosk.send_signal(15)
        try:
            kiosk.wait(15)
        except subprocess.TimeoutExpired:
            kiosk.kill()
    log = (tmp_path / "kiosk.log").read_text()
    assert kiosk.returncode == 0, log[-2000:]
    for visitor in range(2):
        kinds = [x["kind"] for x in call(visitor)]
        assert kinds.count("assistant") == 2 and "interrupted" not in kinds, (visitor, kinds)
    stats = [next(x for x in call(v) if x["kind"] == "stats")["aec"] for v in range(2)]
    assert stats[1]["frames"] > stats[0]["frames"] and stats[1]["converged"], stats  # one canceller, resumed
    assert 'bridge_kiosk_aec_state{bridge_kiosk_aec_state="on"} 1.0' in metrics, metrics


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return str(resp.read().decode())
