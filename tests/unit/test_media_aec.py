"""The echo canceller wrapper (bridge.media.aec) on a synthetic room, fed as the devices feed it.

The far end is espeak-ng speech; the microphone hears it attenuated, delayed and reflected
(bridge.bench.echo_sim.Room), and ``simulate`` calls the tap and the filter in real-time order with
PortAudio-like timestamps (jitter, errors, a drifting second clock). The real engine (AEC3 via pywebrtc-audio)
runs: these are not mocks of it.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import numpy as np
import pytest

from bridge.bench import echo_sim as sim
from bridge.media import aec
from bridge.media.aec import AecSettings, EchoCanceller
from bridge.media.aec_engine import describe_engine
from bridge.media.devices import DeviceSink, DeviceSource
from bridge.media.echo_delay import DelayEstimator

pytestmark = pytest.mark.timeout(180)
RATE = sim.RATE


@pytest.fixture(scope="module")
def far() -> np.ndarray:
    return sim.loop_to(sim.talk(sim.FAR_TEXT), 24)


@pytest.fixture(scope="module")
def talker() -> np.ndarray:
    return sim.talk(sim.NEAR_TEXT, pause_s=0.4, peak=0.35)


def make(**kw: object) -> EchoCanceller:
    c = aec.create(AecSettings(state_file=None, **kw))  # type: ignore[arg-type]
    assert c is not None, "pywebrtc-audio must be installed for these tests (pip install -e .)"
    return c


def floor_of(room: sim.Room, n: int) -> float:
    return float(np.median(sim.frame_energy(room.noise(n))))


def test_far_end_only_loses_25_db_after_convergence(far: np.ndarray) -> None:
    room = sim.Room()
    echo = room.echo(far)
    c = make()
    out = sim.simulate(c, far, echo + room.noise(len(far)))
    assert sim.erle_db(echo, out, floor_of(room, len(far)), start_s=5) >= 25
    m = c.metrics()
    assert m.converged and m.in_path and m.engine == "aec3"
    assert m.delay_ms is not None and abs(m.delay_ms - room.delay_ms) < 3  # the timestamps are exact here
    assert m.erle_db is not None and m.erle_db >= 20 and m.far_late <= 2


def test_near_end_alone_passes_untouched_and_undelayed(talker: np.ndarray) -> None:
    silent_far = np.zeros(len(talker))
    c = make()
    out = sim.simulate(c, silent_far, talker)
    np.testing.assert_array_equal(out, sim.to_int16(talker)[: len(out)])  # idle bypass: bit-exact, no lag
    assert not c.metrics().in_path and c.metrics().switches == 0


def test_near_end_alone_through_the_engine_keeps_its_level(talker: np.ndarray) -> None:
    c = make(bypass_idle=False)
    out = sim.simulate(c, np.zeros(len(talker)), talker)
    lag = c.engine.lag
    assert 0 < lag < RATE * 12 // 1000  # AEC3 lags ~9 ms at 48 kHz: what the idle bypass keeps off the uplink
    assert abs(sim.lag_samples(talker, out) - lag) <= 2  # group delay differs by a sample between signals
    assert sim.near_kept_db(talker[: len(out) - lag], out[lag:]) > -1.0


def test_silence_in_silence_out() -> None:
    zeros = np.zeros(3 * RATE)
    for bypass in (True, False):
        c = make(bypass_idle=bypass)
        out = sim.simulate(c, zeros, zeros)
        assert not np.any(out)


def test_frame_sizes() -> None:
    c = make()
    for n in (480, 960, 1440):
        out = c.process(np.full(n, 100, dtype=np.int16), 1.0 + n / RATE)
        assert out.dtype == np.int16 and len(out) == n
    with pytest.raises(ValueError, match="10 ms"):
        c.process(np.zeros(500, dtype=np.int16), 2.0)


def test_a_failing_filter_passes_the_frame_on_and_is_counted() -> None:
    class Broken:
        def process(self, pcm: np.ndarray, captured: float) -> np.ndarray:
            raise RuntimeError("bug")

    src = DeviceSource(None, filters=[Broken()])
    frame = np.arange(960, dtype=np.int16)
    assert src._filter(src.filters, frame, 1.0) is frame
    assert src.faults.count == 1


def test_a_missing_engine_is_one_warning_and_no_canceller(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "pywebrtc_audio", None)  # import now raises ImportError
    monkeypatch.setattr(aec, "_warned", set())
    source, sink = DeviceSource(None), DeviceSink(None)
    with caplog.at_level(logging.WARNING, logger="bridge.media.aec"):
        assert aec.create() is None
        assert aec.attach(source, sink, AecSettings(state_file=None)) is None
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert describe_engine() is not None and describe_engine().startswith("aec3 (pywebrtc-audio ")  # type: ignore[union-attr]
    assert len(warnings) == 1 and "pip install pywebrtc-audio" in warnings[0].getMessage()
    assert source.filters == () and sink.taps == ()


def test_double_talk_keeps_the_near_end(far: np.ndarray, talker: np.ndarray) -> None:
    """The user speaks over the assistant 12 s in: the talker keeps its level and a level VAD (the emulator's,
    -40 dBFS for 30 ms) starts speech as early as on the clean talker. (The engine stays in the path here,
    so that the output lines up with the talker at one lag for the measurement.)"""
    room = sim.Room()
    near = np.zeros(len(far))
    start = 12 * RATE
    part = talker[: len(far) - start]
    near[start : start + len(part)] = part
    c = make(bypass_idle=False)
    out = sim.simulate(c, far, room.echo(far) + near + room.noise(len(far)))
    lag = c.engine.lag
    span = slice(start, start + len(part))
    got = out[start + lag : start + lag + len(part)]
    assert sim.near_kept_db(near[span], got) > -6.0
    assert sim.speech_start_ms(got) <= sim.speech_start_ms(near[span]) + 30


def test_a_long_echo_path_is_found_and_prealigned(far: np.ndarray) -> None:
    """700 ms (a Bluetooth speaker): beyond AEC3's own range, so the estimator must move the reference."""
    room = sim.Room(delay_ms=700)
    echo = room.echo(far)
    c = make()
    out = sim.simulate(c, far, echo + room.noise(len(far)))
    m = c.metrics()
    assert m.realigns >= 1 and m.delay_ms is not None and abs(m.delay_ms - 700) < 3
    assert m.prealign_ms > 600
    assert sim.erle_db(echo, out, floor_of(room, len(far)), start_s=14) >= 25


def test_a_warm_start_cancels_a_long_path_from_the_first_reply(far: np.ndarray) -> None:
    room = sim.Room(delay_ms=700)
    mic = room.echo(far[: 6 * RATE]) + room.noise(6 * RATE)
    cold = sim.simulate(make(), far[: 6 * RATE], mic)
    warm = sim.simulate(make_warm(700.0), far[: 6 * RATE], mic)
    assert sim.speech_start_ms(cold.astype(np.float64)) < 3000  # cold, the first reply would cut itself off
    assert sim.speech_start_ms(warm.astype(np.float64)) == float("inf")  # warm, no 30 ms run over -40 dBFS


def make_warm(delay_ms: float) -> EchoCanceller:
    c = aec.create(AecSettings(state_file=None), initial_delay_ms=delay_ms)
    assert c is not None
    return c


def test_clock_drift_between_two_sound_cards_is_followed(far: np.ndarray) -> None:
    """The microphone's card runs 208 ppm fast (48010 vs 48000 Hz): 5 ms of drift over the run, followed by the
    timestamps (at most 0.1 ms a second per side, OffsetTracker) and AEC3 (the rest)."""
    ppm = 208.0
    room = sim.Room(drift_ppm=ppm)
    echo = room.echo(far)
    c = make()
    out = sim.simulate(c, far, echo + room.noise(len(far)), sim.Clocks(drift_ppm=ppm))
    assert sim.erle_db(echo, out, floor_of(room, len(far)), start_s=16) >= 25
    assert c.far.jumps == 0


def test_speaker_underruns_do_not_break_the_alignment(far: np.ndarray) -> None:
    """The speaker plays 20, 45 and 8 ms of silence it was not given (underruns); its timestamps say so (as
    PortAudio's do, measured through PulseAudio: docs/benchmarks.md), and the reference follows at once."""
    clocks = sim.Clocks(gaps=((6.0, 20.0), (12.0, 45.0), (18.0, 8.0)))
    room = sim.Room()
    echo = room.echo(clocks.as_played(far))
    c = make()
    out = sim.simulate(c, far, echo + room.noise(len(far)), clocks)
    assert sim.erle_db(echo, out, floor_of(room, len(far)), start_s=5) >= 35
    assert c.far.steps == 3


def test_a_microphone_delivering_later_is_not_mistaken_for_a_moved_echo(far: np.ndarray) -> None:
    """8 s in, the microphone's callbacks start coming 80 ms later (a busy machine: PulseAudio raised the
    client's latency); the samples are the same, so the pairing must stay where it is."""
    clocks = sim.Clocks(capture_steps=((8.0, 80.0),))
    room = sim.Room()
    echo = room.echo(far)
    c = make()
    out = sim.simulate(c, far, echo + room.noise(len(far)), clocks)
    assert sim.erle_db(echo, out, floor_of(room, len(far)), start_s=5) >= 35
    assert c.far.jumps == 0


def test_timestamps_that_claim_the_echo_comes_early_are_corrected(far: np.ndarray) -> None:
    """A device whose reported output latency is 60 ms too long: the echo arrives before its reference would
    by the timestamps; the estimator pairs further ahead instead of cancelling nothing."""
    room = sim.Room()
    echo = room.echo(far)
    c = make()
    out = sim.simulate(c, far, echo + room.noise(len(far)), sim.Clocks(play_err_ms=60.0))
    assert c.metrics().delay_ms is not None and abs(c.metrics().delay_ms + 20) < 3  # type: ignore[operator]
    assert sim.erle_db(echo, out, floor_of(room, len(far)), start_s=10) >= 25


def test_the_idle_bypass_splices_around_the_engine_lag(far: np.ndarray, talker: np.ndarray) -> None:
    """Far end for 3 s, then silence; the talker throughout. While echo is possible the output is the
    engine's (9 ms late); a tail after the far end stops it is the microphone again, undelayed."""
    n = 8 * RATE
    played = np.zeros(n)
    played[: 3 * RATE] = far[: 3 * RATE]
    near = np.resize(talker, n)
    c = make(tail_ms=300.0)
    out = sim.simulate(c, played, near)
    assert c.metrics().switches >= 2 and not c.metrics().in_path  # in, (out and in in pauses), out
    assert sim.lag_samples(near[4 * RATE :], out[4 * RATE :]) == 0
    np.testing.assert_array_equal(out[5 * RATE :], sim.to_int16(near)[5 * RATE : len(out)])


def test_the_delay_estimator_finds_a_long_lag_and_refuses_silence(far: np.ndarray) -> None:
    est = DelayEstimator()
    d = int(0.333 * RATE)
    mic = np.concatenate([np.zeros(d), 0.3 * far[:-d]]) + sim.Room().noise(len(far))
    for k in range(0, 4 * RATE, 480):
        est.push(sim.to_int16(mic[k : k + 480]), sim.to_int16(far[k : k + 480]))
    e = est.estimate()
    assert e is not None and abs(e.lag_s - 0.333) < 0.001
    quiet = DelayEstimator()
    for _ in range(400):
        quiet.push(np.zeros(480, np.int16), np.zeros(480, np.int16))
    assert quiet.estimate() is None


def test_the_delay_is_persisted_per_device_pair(tmp_path: Path) -> None:
    path = tmp_path / "state" / "aec.json"
    aec.save_delay(path, "mic -> spk", 712.34)
    aec.save_delay(path, "usb -> usb", 20.0)
    assert aec.load_delay(path, "mic -> spk") == 712.3
    assert aec.load_delay(path, "other -> pair") is None
    assert aec.load_delay(None, "mic -> spk") is None
    path.write_text("{not json")
    assert aec.load_delay(path, "mic -> spk") is None
    path.write_text(json.dumps({"pairs": {"mic -> spk": {"delay_ms": "70"}}}))
    assert aec.load_delay(path, "mic -> spk") is None


def test_attach_installs_one_filter_and_one_tap_and_detach_saves_the_delay(tmp_path: Path, far: np.ndarray) -> None:
    path = tmp_path / "aec.json"
    source, sink = DeviceSource(None), DeviceSink(None)
    source.name, sink.name = "mic", "spk"
    aec.save_delay(path, "mic -> spk", 700.0)
    att = aec.attach(source, sink, AecSettings(state_file=path))
    assert att is not None
    assert source.filters == (att.canceller,) and sink.taps == (att.canceller,)
    assert att.canceller.delay_ms == 700.0 and att.metrics().prealign_ms > 600  # warm start
    room = sim.Room(delay_ms=650)
    sim.simulate(att.canceller, far[: 8 * RATE], room.echo(far[: 8 * RATE]))
    att.detach()
    att.detach()
    assert source.filters == () and sink.taps == ()
    assert abs((aec.load_delay(path, "mic -> spk") or 0) - 650) < 3


def test_a_calibration_burst_finds_a_long_path_before_the_first_reply(far: np.ndarray) -> None:
    """No persisted delay and a 950 ms path: a quiet noise burst at start-up, then the first reply 2.5 s
    later is cancelled from its first word."""
    room = sim.Room(delay_ms=950)
    burst = aec.calibration_sound().astype(np.float64)
    assert -31 < 20 * np.log10(np.sqrt(np.mean(burst**2)) / 32768) < -29
    played = np.zeros(int(8.5 * RATE))
    played[: len(burst)] = burst
    start = int(2.5 * RATE)
    played[start:] = far[: len(played) - start]
    mic = room.echo(played) + room.noise(len(played))
    c = make()
    out = sim.simulate(c, played, mic)
    assert c.metrics().delay_ms is not None and abs(c.metrics().delay_ms - 950) < 3  # type: ignore[operator]
    reply = out[start:].astype(np.float64)
    assert sim.speech_start_ms(reply) == float("inf")


def test_the_playout_timeline_smooths_jitter_and_wobble_and_steps_only_on_underruns() -> None:
    from bridge.media.timeline import PlayoutTimeline

    rng = np.random.default_rng(5)
    tl = PlayoutTimeline(48_000)
    block, stream0, mono0 = 240, 1000.0, 50.0  # stream clock and monotonic differ by a constant
    true_at = []
    got = []
    gap = 0.0
    for k in range(2000):  # 10 s of 5 ms blocks
        if k == 1200:
            gap = 0.030  # an underrun: 30 ms of silence the device inserted
        play = k * block / 48_000 + 0.015 + gap
        wobble = 0.004 if 600 <= k < 640 else 0.0  # the delay report wobbles by 4 ms for 200 ms: not a step
        current = stream0 + k * block / 48_000 + rng.uniform(0, 0.002)  # the callback runs a little late
        now = mono0 + (current - stream0) + rng.uniform(0, 0.003)  # preempted before reading our clock
        dac = stream0 + play + wobble
        got.append(tl.at(block, now, dac, current, underflow=k == 1200))
        true_at.append(mono0 + play)
    err = np.abs(np.array(got) - np.array(true_at))
    assert err[100:1200].max() < 0.001  # the wobble moved it by under 1 ms
    assert err[1201:].max() < 0.001 and tl.steps == 1


def test_the_offset_tracker_follows_drift_ignores_jitter_and_steps_only_when_told() -> None:
    from bridge.media.farend import OffsetTracker

    rng = np.random.default_rng(9)
    follower = OffsetTracker(0.01, clip_s=0.0002)  # the microphone's: never steps
    stepper = OffsetTracker(0.01, clip_s=0.0002, persist=6)
    for k in range(3000):  # 60 s of 20 ms frames; the card drifts 80 ppm; callbacks jitter up to 3 ms late
        truth = 10.0 + 80e-6 * k * 0.02 + (0.08 if k >= 2000 else 0.0)  # 40 s in: a step of 80 ms
        seen = truth + rng.uniform(0, 0.003)
        follower.update(seen)
        stepper.update(seen)
        if k == 1999:  # 40 s: 3.2 ms of drift, followed (at ~1 ms behind: the slew limit against the jitter)
            assert abs(follower.value - (truth + 0.0015)) < 0.0015
            before_step = follower.value
    # the 80 ms step was not followed (and nothing after it: every value is an outlier now; AEC3 and the delay
    # estimator see to the echo path from here)
    assert abs(follower.value - before_step) < 0.0005
    assert follower.steps == 0 and stepper.steps == 1
    assert abs(stepper.value - (truth + 0.0015)) < 0.0015
