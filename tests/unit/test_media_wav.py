"""File and null endpoints keep real time: WavSource paces like a microphone, WavSink records silence too."""

from __future__ import annotations

import asyncio
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from bridge.media import NullSink, NullSource, WavSink, WavSource, open_sink, open_source
from bridge.media.clock import VirtualClock
from bridge.media.devices import DeviceSink, DeviceSource
from bridge.media.playout import PlayoutBuffer

FRAME = 960


def write_wav(path: Path, samples: np.ndarray, rate: int = 48_000, channels: int = 1) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.astype("<i2").tobytes())


def read_wav(path: Path) -> tuple[int, np.ndarray]:
    with wave.open(str(path), "rb") as w:
        return w.getframerate(), np.frombuffer(w.readframes(w.getnframes()), "<i2")


async def test_wav_source_paces_frames_then_silence(tmp_path: Path) -> None:
    data = (np.arange(10 * FRAME) % 20000 + 1).astype(np.int16)  # 200 ms, all non-zero
    write_wav(tmp_path / "in.wav", data)
    clock = VirtualClock()
    src = WavSource(tmp_path / "in.wav", clock=clock)
    await src.start()
    assert src.start_mono is not None and src.start_unix is not None
    assert abs(src.start_unix - time.time()) < 1
    got: list[tuple[np.ndarray, float, float]] = []  # (frame, captured, when read)

    async def reader() -> None:
        for _ in range(15):
            pcm, captured = await src.read_frame()
            got.append((pcm, captured, clock.now()))

    task = asyncio.create_task(reader())
    await clock.advance_to(src.start_mono + 0.3)
    await asyncio.wait_for(task, 1)
    # frame k is available exactly when it has been "recorded", never before: that is its capture time
    for k, (_, captured, read_at) in enumerate(got):
        assert captured == pytest.approx(src.start_mono + (k + 1) * 0.02, abs=1e-9)
        assert read_at == pytest.approx(captured, abs=1e-9)
    out = np.concatenate([pcm for pcm, _, _ in got])
    np.testing.assert_array_equal(out[: len(data)], data)
    assert not out[len(data) :].any()
    assert src.finished and src.dropped == 0
    await src.aclose()


async def test_wav_source_skips_ahead_when_reader_lags(tmp_path: Path) -> None:
    write_wav(tmp_path / "in.wav", np.ones(48_000, np.int16))
    clock = VirtualClock()
    src = WavSource(tmp_path / "in.wav", max_lag_ms=100, clock=clock)
    await src.start()
    assert src.start_mono is not None
    clock.t = src.start_mono + 0.3  # the reader comes ~300 ms late: real time wins, old frames are gone
    _, captured = await src.read_frame()
    assert src.dropped == 14 and src.frames_read == 15
    assert captured == pytest.approx(src.start_mono + 0.3)  # the frame it gets is the one due now


async def test_wav_source_resamples_and_downmixes(tmp_path: Path) -> None:
    stereo = np.repeat(np.full(24_000, 8000, np.int16), 2)  # 1 s, 24 kHz, 2 channels
    write_wav(tmp_path / "s.wav", stereo, rate=24_000, channels=2)
    src = WavSource(tmp_path / "s.wav")
    await src.start()
    assert src.duration_s == pytest.approx(1.0, abs=0.002)


async def test_wav_source_missing_file(tmp_path: Path) -> None:
    from bridge.errors import AudioError

    with pytest.raises(AudioError, match="no such input file"):
        await WavSource(tmp_path / "nope.wav").start()


async def test_wav_sink_sample_n_lands_at_n_over_rate(tmp_path: Path) -> None:
    clock = VirtualClock()
    pulled_at: list[float] = []

    def pull(n: int) -> np.ndarray:
        pulled_at.append(clock.now())
        return np.full(n, len(pulled_at), np.int16)  # block k holds the value k + 1

    sink = WavSink(tmp_path / "out.wav", clock=clock)
    await sink.start(pull)
    assert sink.start_mono is not None
    await clock.advance_to(sink.start_mono + 0.3 - 1e-6)
    await sink.aclose()
    rate, out = read_wav(tmp_path / "out.wav")
    assert rate == 48_000
    assert len(pulled_at) == 30 and len(out) == sink.samples_written == 480 * 30  # 0.3 s, silence included
    for k in range(len(pulled_at)):
        # Block k is pulled when its first sample n = 480 k plays: n / rate after the start.
        assert out[480 * k] == k + 1
        assert pulled_at[k] == pytest.approx(sink.start_mono + 480 * k / rate, abs=1e-9)


async def test_wav_sink_catches_up_after_a_stall_and_keeps_real_time(tmp_path: Path) -> None:
    """After the loop stalls, every missed block is pulled at once: sample n still plays at n / rate."""
    clock = VirtualClock()
    sink = WavSink(tmp_path / "out.wav", clock=clock)
    await sink.start(lambda n: np.ones(n, np.int16))
    assert sink.start_mono is not None
    await clock.advance_to(sink.start_mono + 0.05)
    clock.t += 0.2  # a 200 ms stall: no timer ran
    await clock.advance(0)
    await sink.aclose()
    assert sink.blocks == 26 and sink.late_blocks == 18  # 0.25 s of blocks; those due before 0.24 s were late


async def test_wav_sink_records_silence_and_playout(tmp_path: Path) -> None:
    clock = VirtualClock()
    buf = PlayoutBuffer(clock=clock)
    sink = WavSink(tmp_path / "out.wav", clock=clock)
    await sink.start(buf.pull)
    assert sink.start_mono is not None
    await clock.advance_to(sink.start_mono + 0.105)
    pushed_at = clock.now()
    buf.push(np.full(2400, 9000, np.int16), "a")  # 50 ms burst
    await clock.advance(0.15)
    # The file is a valid WAV while recording (header patched, flushed periodically).
    await sink.aclose()
    _rate, out = read_wav(tmp_path / "out.wav")
    onset = int(np.flatnonzero(out)[0])
    assert onset == 480 * 11  # the first block pulled after the push (at 110 ms)
    assert onset / 48_000 >= pushed_at - sink.start_mono
    assert np.count_nonzero(out) == 2400
    st = buf.stats("a")
    assert st is not None and st.first_handed is not None
    assert st.first_handed - sink.start_mono == pytest.approx(onset / 48_000, abs=1e-9)


async def test_wav_sink_file_valid_while_running(tmp_path: Path) -> None:
    sink = WavSink(tmp_path / "out.wav", flush_every_s=0.05)
    await sink.start(lambda n: np.ones(n, np.int16))
    try:
        deadline = time.monotonic() + 2
        frames = 0
        while frames == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            with wave.open(str(tmp_path / "out.wav"), "rb") as w:
                frames = w.getnframes()
        assert frames > 0
    finally:
        await sink.aclose()
    await sink.aclose()  # idempotent


async def test_null_endpoints_keep_time() -> None:
    clock = VirtualClock()
    src = NullSource(clock=clock)
    await src.start()
    assert src.start_mono is not None
    clock.t = src.start_mono + 0.1
    frames = [await src.read_frame() for _ in range(5)]  # all five are due
    assert all(not pcm.any() for pcm, _ in frames)
    assert [c for _, c in frames] == pytest.approx([src.start_mono + 0.02 * (k + 1) for k in range(5)])
    buf = PlayoutBuffer(clock=clock)
    buf.push(np.ones(4800, np.int16), "a")
    sink = NullSink(clock=clock)
    await sink.start(buf.pull)
    assert sink.start_mono is not None
    await clock.advance_to(sink.start_mono + 0.1 - 1e-6)
    assert buf.queued_samples == 0 and buf.handed_ms("a") == pytest.approx(100.0)  # played in 100 ms, no sooner
    await sink.aclose()


async def test_paced_clocks_share_one_grid() -> None:
    """A source and a sink started at unrelated moments tick on the same 20 ms grid (one loop wake-up for
    both), each starting within 20 ms of its start() call."""
    clock = VirtualClock(start=1000.003)
    sink = NullSink(clock=clock)
    before = clock.now()
    await sink.start(PlayoutBuffer(clock=clock).pull)
    clock.t += 0.013
    src = NullSource(clock=clock)
    called = clock.now()
    await src.start()
    await sink.aclose()
    assert sink.start_mono is not None and src.start_mono is not None
    assert before <= sink.start_mono < before + 0.02 and called <= src.start_mono < called + 0.02
    frames_apart = (src.start_mono - sink.start_mono) / 0.02
    assert frames_apart == pytest.approx(round(frames_apart), abs=1e-6)


async def test_paced_start_is_one_instant_on_the_unix_and_monotonic_clocks() -> None:
    src = NullSource()
    await src.start()
    assert src.start_unix is not None and src.start_mono is not None
    assert src.start_unix - src.start_mono == pytest.approx(time.time() - time.monotonic(), abs=0.002)


def test_factories_pick_the_endpoint() -> None:
    assert isinstance(open_source("null"), NullSource)
    assert isinstance(open_sink("NULL"), NullSink)
    assert isinstance(open_source("x/in.WAV"), WavSource)
    assert isinstance(open_sink("out.wav"), WavSink)
    assert isinstance(open_source(None), DeviceSource)
    sink = open_sink("2")
    assert isinstance(sink, DeviceSink) and sink.device == "2"
