"""Open speakers, end to end: ``bridge run`` on the PulseAudio virtual devices in an echo room.

The echo room (tests/echo_room.py) sends what the virtual speaker plays back into the virtual microphone
(-9 dB after ~30 ms, two reflections). ``bridge emulate --behaviour speech`` answers each question with a
spoken sentence; its server VAD takes anything above -40 dBFS for the user. The harness is the benchmark's
(:mod:`bridge.bench.aec_run`): questions played into ``micsink``, each after the last reply has finished
playing at the speaker.

- ``--aec off``: the replies interrupt themselves (the echo room is real).
- the default (``auto``: on for two sound cards), both transports: whole replies, no ``interrupted`` line;
  the first run calibrates and persists the echo delay; the session asks for far-field noise reduction.
- with echo cancellation, a user barge-in over a reply (while its echo plays) still stops it, fast.
- a long echo path (700 ms) is found by the first run's calibration.
- a kiosk (one call per visitor): two visitors, a whole reply each, one canceller throughout.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.bench.aec_run import QUESTIONS, Conversation, Speaker, converse, emulator, free_port, lines, say, wait
from bridge.bench.echo_room import RoomSpec

try:
    from tests.echo_room import EchoRoom, echo_room  # noqa: F401
    from tests.helpers import clean_env
    from tests.pulse import Pulse, pulse  # noqa: F401
except ModuleNotFoundError:  # plain `pytest` puts tests/ on sys.path, not the repo
    from echo_room import EchoRoom, echo_room  # type: ignore[no-redef]  # noqa: F401
    from helpers import clean_env  # type: ignore[no-redef]
    from pulse import Pulse, pulse  # type: ignore[no-redef]  # noqa: F401

pytestmark = [pytest.mark.pulseaudio, pytest.mark.timeout(240)]
ASK = QUESTIONS[:2]


@pytest.fixture
def api(pulse: Pulse) -> Iterator[str]:  # noqa: F811
    with emulator(clean_env(**pulse.env())) as url:
        yield url


def _env(room: EchoRoom, tmp: Path) -> dict[str, str]:
    return clean_env(**{**room.pulse.env(), "OPENAI_API_KEY": "sk-aec-e2e", "XDG_STATE_HOME": str(tmp / "state")})


def _ran(conv: Conversation) -> list[dict[str, Any]]:
    assert conv.returncode == 0, conv.log.read_text()[-2000:]
    return conv.lines


def test_without_aec_the_replies_interrupt_themselves(echo_room: EchoRoom, api: str, tmp_path: Path) -> None:  # noqa: F811
    ls = _ran(converse(_env(echo_room, tmp_path), api, tmp_path, "webrtc", "--aec", "off", questions=ASK[:1]))
    assert [x for x in ls if x["kind"] == "interrupted"], [x["kind"] for x in ls]


@pytest.mark.parametrize("transport", ["webrtc", "ws"])
def test_with_aec_no_reply_cuts_itself_off(echo_room: EchoRoom, api: str, tmp_path: Path, transport: str) -> None:  # noqa: F811
    conv = converse(_env(echo_room, tmp_path), api, tmp_path, transport, questions=ASK)  # --aec auto
    ls = _ran(conv)
    kinds = [x["kind"] for x in ls]
    assert kinds.count("assistant") == len(ASK), kinds
    assert "interrupted" not in kinds, kinds
    assert kinds.count("user") == len(ASK), kinds  # each question heard once: no echo taken for a turn
    session = next(x for x in ls if x["kind"] == "session")
    assert str(session["aec"]).startswith("aec3"), session
    stats = next(x for x in ls if x["kind"] == "stats")
    assert stats["aec"]["converged"], stats["aec"]
    # the first run on these devices calibrated and saved the echo delay for the next one
    saved = json.loads((tmp_path / "state" / "bridge" / "aec.json").read_text())["pairs"]
    assert len(saved) == 1 and 0 < next(iter(saved.values()))["delay_ms"] < 200, saved
    assert "echo cancellation calibrated" in conv.log.read_text()


@pytest.mark.parametrize("echo_room", [RoomSpec(delay_ms=700.0, reflections=((15.0, -16.0),))], indirect=True)
def test_a_long_echo_path_is_found_by_the_first_run(echo_room: EchoRoom, api: str, tmp_path: Path) -> None:  # noqa: F811
    """700 ms (Bluetooth, a PipeWire graph): beyond AEC3's own reach; the calibration finds it and the
    reference is pre-aligned, so even the first reply does not cut itself off (it did without: checked)."""
    ls = _ran(converse(_env(echo_room, tmp_path), api, tmp_path, "webrtc", questions=ASK))
    kinds = [x["kind"] for x in ls]
    assert kinds.count("assistant") == len(ASK) and "interrupted" not in kinds, kinds
    stats = next(x for x in ls if x["kind"] == "stats")
    assert 650 < stats["aec"]["delay_ms"] < 800 and stats["aec"]["prealign_ms"] > 500, stats["aec"]


def test_with_aec_a_user_barge_in_still_stops_the_reply(echo_room: EchoRoom, api: str, tmp_path: Path) -> None:  # noqa: F811
    conv = converse(_env(echo_room, tmp_path), api, tmp_path, "webrtc", questions=ASK[:1], bargein_after_s=1.0)
    ls = _ran(conv)
    assert "interrupted" in [x["kind"] for x in ls]
    bargein = [float(x["bargein_ms"]) for x in ls if x["kind"] == "latency" and x.get("bargein_ms") is not None]
    assert bargein and max(bargein) < 300, bargein


def test_a_kiosk_on_open_speakers_serves_two_visitors(echo_room: EchoRoom, api: str, tmp_path: Path) -> None:  # noqa: F811
    env = _env(echo_room, tmp_path)
    port = free_port()
    calls = tmp_path / "calls"
    kiosk = subprocess.Popen(
        [sys.executable, "-m", "bridge", "run", "--kiosk", "--api-base", api, "--hangup-after", "2"]
        + ["--health-port", str(port), "--transcript-dir", str(calls), "-v"],
        env=env,
        stderr=(tmp_path / "kiosk.log").open("w"),
    )
    speaker = Speaker(env)

    def call(k: int) -> list[dict[str, Any]]:
        files = sorted(calls.glob("kiosk-*.jsonl"))
        return lines(files[k]) if len(files) > k else []

    def health() -> dict[str, Any]:
        try:
            return dict(json.loads(_get(f"http://127.0.0.1:{port}/healthz")))
        except OSError:
            return {}

    try:
        wait(lambda: health().get("state") == "idle", "the kiosk to listen", 40)
        for visitor in range(2):
            for k, text in enumerate(ASK[:1]):  # one question each: the second visitor is the point
                replies = len([x for x in call(visitor) if x["kind"] in ("assistant", "interrupted")])
                say(tmp_path, f"v{visitor}q{k}", text, env)
                wait(
                    lambda v=visitor, r=replies: (
                        len([x for x in call(v) if x["kind"] in ("assistant", "interrupted")]) > r
                    ),
                    f"visitor {visitor + 1}'s reply {k + 1}",
                    40,
                )
                wait(lambda: speaker.quiet_for() > 0.8, "the reply to finish playing", 40)
            wait(lambda v=visitor: any(x["kind"] == "stats" for x in call(v)), "the hang-up", 20)
            wait(lambda: health().get("state") == "idle", "idle again", 20)
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
        assert kinds.count("assistant") == 1 and "interrupted" not in kinds, (visitor, kinds)
    stats = [next(x for x in call(v) if x["kind"] == "stats")["aec"] for v in range(2)]
    assert stats[1]["frames"] > stats[0]["frames"] and stats[1]["converged"], stats  # one canceller throughout
    assert 'bridge_kiosk_aec_state{bridge_kiosk_aec_state="on"} 1.0' in metrics, metrics


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return str(resp.read().decode())
