"""File and null endpoints keep real time: WavSource paces like a microphone, WavSink records silence too."""

from __future__ import annotations

import asyncio
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from bridge.media import NullSink, NullSource, WavSink, WavSource, open_sink, open_source
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
    src = WavSource(tmp_path / "in.wav")
    await src.start()
    assert src.start_mono is not None and src.start_unix is not None
    assert abs(src.start_unix - time.time()) < 1
    frames, lateness = [], []
    for k in range(15):
        frames.append(await src.read())
        lateness.append(time.monotonic() - (src.start_mono + (k + 1) * 0.02))
    # A frame is available when it has been "recorded", never before, and promptly after.
    assert min(lateness) >= -0.001
    assert float(np.median(lateness)) < 0.005 and max(lateness) < 0.03
    out = np.concatenate(frames)
    np.testing.assert_array_equal(out[: len(data)], data)
    assert not out[len(data) :].any()
    assert src.finished and src.dropped == 0
    await src.aclose()


async def test_wav_source_skips_ahead_when_reader_lags(tmp_path: Path) -> None:
    write_wav(tmp_path / "in.wav", np.ones(48_000, np.int16))
    src = WavSource(tmp_path / "in.wav", max_lag_ms=100)
    await src.start()
    await asyncio.sleep(0.3)
    await src.read()
    assert src.dropped >= 8  # ~300 ms late: real time wins, old frames are gone
    assert src.frames_read >= 14


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
    pulled_at: list[float] = []

    def pull(n: int) -> np.ndarray:
        pulled_at.append(time.monotonic())
        return np.full(n, len(pulled_at), np.int16)  # block k holds the value k + 1

    sink = WavSink(tmp_path / "out.wav")
    await sink.start(pull)
    await asyncio.sleep(0.3)
    await sink.aclose()
    rate, out = read_wav(tmp_path / "out.wav")
    assert rate == 48_000
    assert len(out) == sink.samples_written == 480 * len(pulled_at)
    assert len(out) / rate == pytest.approx(0.3, abs=0.03)
    assert sink.start_mono is not None
    for k in range(len(pulled_at)):
        # Block k is pulled when its first sample n = 480 k plays: n / rate after the start.
        assert out[480 * k] == k + 1
        assert pulled_at[k] - (sink.start_mono + 480 * k / rate) == pytest.approx(0.0, abs=0.02)
    assert float(np.median([pulled_at[k] - sink.start_mono - k * 0.01 for k in range(len(pulled_at))])) < 0.004


async def test_wav_sink_records_silence_and_playout(tmp_path: Path) -> None:
    buf = PlayoutBuffer()
    sink = WavSink(tmp_path / "out.wav")
    await sink.start(buf.pull)
    assert sink.start_mono is not None
    await asyncio.sleep(0.1)
    pushed_at = time.monotonic()
    buf.push(np.full(2400, 9000, np.int16), "a")  # 50 ms burst
    await asyncio.sleep(0.15)
    # The file is a valid WAV while recording (header patched, flushed periodically).
    await sink.aclose()
    _rate, out = read_wav(tmp_path / "out.wav")
    onset = int(np.flatnonzero(out)[0])
    expected = (pushed_at - sink.start_mono) * 48_000
    # the next block after the push; a sink that fell behind (busy loop) catches up on its schedule, so the
    # block that took the audio may be placed up to one block before the push
    assert -480 <= onset - expected <= 480 + 48
    assert np.count_nonzero(out) == 2400
    st = buf.stats("a")
    assert st is not None and st.first_handed is not None
    assert st.first_handed - sink.start_mono == pytest.approx(onset / 48_000, abs=0.005)


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
    src = NullSource()
    await src.start()
    assert src.start_mono is not None
    for _ in range(5):
        assert not (await src.read()).any()
    assert time.monotonic() - src.start_mono == pytest.approx(0.1, abs=0.02)
    buf = PlayoutBuffer()
    buf.push(np.ones(4800, np.int16), "a")
    sink = NullSink()
    await sink.start(buf.pull)
    for _ in range(200):  # poll with a deadline (2 s)
        if not buf.queued_samples:
            break
        await asyncio.sleep(0.01)
    await sink.aclose()
    assert buf.handed_ms("a") == pytest.approx(100.0)
    assert sink.start_mono is not None and time.monotonic() - sink.start_mono >= 0.09


async def test_paced_clocks_share_one_grid(tmp_path: Path) -> None:
    """A source and a sink started at unrelated moments tick on the same 20 ms grid (one loop wake-up for
    both), each starting within 20 ms of its start() call, with Unix and monotonic start the same instant."""
    sink = NullSink()
    before = time.monotonic()
    await sink.start(PlayoutBuffer().pull)
    await asyncio.sleep(0.013)
    src = NullSource()
    called = time.monotonic()
    await src.start()
    await sink.aclose()
    assert sink.start_mono is not None and src.start_mono is not None
    assert before <= sink.start_mono < before + 0.021 and called <= src.start_mono < called + 0.021
    frames_apart = (src.start_mono - sink.start_mono) / 0.02
    assert frames_apart == pytest.approx(round(frames_apart), abs=1e-6)
    for dev in (src, sink):
        assert dev.start_unix is not None
        assert dev.start_unix - dev.start_mono == pytest.approx(time.time() - time.monotonic(), abs=0.002)


def test_factories_pick_the_endpoint() -> None:
    assert isinstance(open_source("null"), NullSource)
    assert isinstance(open_sink("NULL"), NullSink)
    assert isinstance(open_source("x/in.WAV"), WavSource)
    assert isinstance(open_sink("out.wav"), WavSink)
    assert isinstance(open_source(None), DeviceSource)
    sink = open_sink("2")
    assert isinstance(sink, DeviceSink) and sink.device == "2"
