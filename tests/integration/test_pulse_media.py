"""The real sounddevice path through PulseAudio virtual devices (ENVIRONMENT.md), not mocks.

Tone into the virtual microphone -> DeviceSource; PlayoutBuffer -> DeviceSink -> captured at the virtual
speaker's monitor, including a flush mid-burst; and the device round trip (speaker -> its monitor).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import numpy as np
import pytest

from bridge.media import DeviceSink, DeviceSource, PlayoutBuffer
from bridge.media.portaudio import list_devices
from tests.helpers import until
from tests.pulse import Pulse, active_span, dominant_hz, pulse, tone, write_wav  # noqa: F401

pytestmark = [pytest.mark.pulseaudio, pytest.mark.timeout(60)]
RATE = 48_000


@asynccontextmanager
async def capture_speaker(p: Pulse, path: Path) -> AsyncIterator[None]:
    """Record spk.monitor (what our output stream played) as raw s16 mono 48 kHz into ``path``."""
    with path.open("wb") as f:
        proc = await asyncio.create_subprocess_exec(
            *("parec", "-d", "spk.monitor", "--rate=48000", "--channels=1", "--format=s16le", "--latency-msec=10"),
            env=p.env(),
            stdout=f,
        )
        try:
            for _ in range(200):  # poll until the recorder is connected (max 2 s)
                if os.fstat(f.fileno()).st_size > 0:
                    break
                await asyncio.sleep(0.01)
            yield
            await asyncio.sleep(0.3)  # let the tail drain through the 10 ms recorder
        finally:
            proc.terminate()
            await asyncio.wait_for(proc.wait(), 5)


async def wait_for(cond, timeout: float = 3.0) -> None:  # type: ignore[no-untyped-def]
    await until(cond, "the device", timeout)


@asynccontextmanager
async def speaker(p: Pulse, raw: Path) -> AsyncIterator[tuple[PlayoutBuffer, DeviceSink]]:
    """A PlayoutBuffer playing through the default (virtual) speaker, recorded into ``raw``."""
    buf = PlayoutBuffer()
    sink = DeviceSink(None)
    async with capture_speaker(p, raw):
        await sink.start(buf.pull)
        try:
            buf.set_output_latency(sink.output_latency)
            yield buf, sink
        finally:
            await sink.aclose()


def test_bridge_devices_lists_pulse(pulse: Pulse) -> None:  # noqa: F811
    names = {d.name for d in list_devices()}
    assert {"pulse", "default"} <= names
    out = subprocess.run(
        [sys.executable, "-m", "bridge", "devices"], env=pulse.env(), capture_output=True, text=True, timeout=20
    )
    assert out.returncode == 0, out.stderr
    assert "pulse" in out.stdout and "ALSA" in out.stdout and "input and" in out.stdout


async def test_tone_into_virtual_mic_reaches_device_source(pulse: Pulse, tmp_path: Path) -> None:  # noqa: F811
    burst = write_wav(tmp_path / "burst.wav", tone(0.3, 1000))
    src = DeviceSource(None)
    await src.start()
    try:
        assert src.rate == RATE and src.channels == 1
        player = await asyncio.create_subprocess_exec("paplay", "-d", "micsink", str(burst), env=pulse.env())
        heard: list[np.ndarray] = []
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            frame = await asyncio.wait_for(src.read(), 2)
            assert len(frame) == 960 and frame.dtype == np.int16
            if heard or np.abs(frame).max() > 3000:
                heard.append(frame)
            if len(heard) >= 20:
                break
        await asyncio.wait_for(player.wait(), 5)
        assert heard, "the tone never reached the input stream"
        audio = np.concatenate(heard)
        span = active_span(audio, 3000)
        assert span is not None
        assert dominant_hz(audio[span[0] : span[1]]) == pytest.approx(1000, abs=20)
        assert (span[1] - span[0]) / RATE == pytest.approx(0.3, abs=0.03)
        assert src.dropped == 0
    finally:
        await src.aclose()


async def test_playout_through_device_sink_is_captured(pulse: Pulse, tmp_path: Path) -> None:  # noqa: F811
    raw = tmp_path / "spk.raw"
    async with speaker(pulse, raw) as (buf, sink):
        assert sink.rate == RATE
        buf.push(tone(0.3, 1000), "a")
        buf.end_item("a")
        await wait_for(lambda: buf.queued_samples == 0)
        await wait_for(lambda: buf.played_ms("a") >= 300)  # out of the device too (PortAudio's latency)
        blocks = sink.blocks
        await wait_for(lambda: sink.blocks >= blocks + 10)  # and 50 ms more, as the recorder lags
    captured = np.frombuffer(raw.read_bytes(), "<i2")
    span = active_span(captured, 3000)
    assert span is not None, "nothing reached the speaker"
    assert (span[1] - span[0]) / RATE == pytest.approx(0.3, abs=0.01)
    assert dominant_hz(captured[span[0] : span[1]]) == pytest.approx(1000, abs=20)
    assert sink.faults.count == 0 and buf.counters.underruns == 0


async def test_flush_silences_the_real_device(pulse: Pulse, tmp_path: Path) -> None:  # noqa: F811
    raw = tmp_path / "spk.raw"
    async with speaker(pulse, raw) as (buf, sink):
        buf.push(tone(2.0, 1000), "a")
        await wait_for(lambda: buf.handed_ms("a") >= 300)
        result = buf.flush(fade_ms=5)
        heard_at_flush = buf.handed_ms("a")
        await wait_for(lambda: result.stopped_at is not None)
        buf.push(tone(0.5, 1000), "a")  # a late chunk of the interrupted item: never played
        blocks = sink.blocks
        await wait_for(lambda: sink.blocks >= blocks + 40)  # 200 ms of device blocks pulled after it
    captured = np.frombuffer(raw.read_bytes(), "<i2")
    span = active_span(captured, 1000)
    assert span is not None
    played_ms = (span[1] - span[0]) / 48
    # Exactly what was handed before the flush plus at most the 5 ms fade, then nothing.
    assert played_ms == pytest.approx(heard_at_flush + 2.5, abs=5)
    assert buf.handed_ms("a") - heard_at_flush <= 5.01
    assert buf.counters.gated_dropped == RATE // 2
    assert result.stopped_at is not None
    stop_ms = 1000 * (result.stopped_at - result.requested_at)
    print(f"\nflush -> device silent (estimated): {stop_ms:.1f} ms, output latency {sink.output_latency * 1000:.1f} ms")
    assert stop_ms <= 10 + 5 + 1000 * sink.output_latency + 5


async def test_device_round_trip(pulse: Pulse) -> None:  # noqa: F811
    """Speaker out -> spk.monitor in, per burst: onset captured minus onset handed to PortAudio."""
    os.environ["PULSE_SOURCE"] = "spk.monitor"  # read per stream by libpulse when the stream opens
    try:
        src = DeviceSource(None)
        await src.start()
    finally:
        del os.environ["PULSE_SOURCE"]
    buf = PlayoutBuffer()
    sink = DeviceSink(None)
    await sink.start(buf.pull)
    trips: list[float] = []
    try:
        for k in range(5):
            key = f"burst{k}"
            buf.push(tone(0.05, 1000), key)
            onset_at = None
            for _ in range(100):  # at most 2 s of frames
                frame = await asyncio.wait_for(src.read(), 2)
                hot = np.flatnonzero(np.abs(frame.astype(np.int32)) > 2000)
                if len(hot):
                    assert src.last_frame_mono is not None
                    onset_at = src.last_frame_mono - (960 - hot[0]) / RATE
                    break
            st = buf.stats(key)
            assert onset_at is not None and st is not None and st.first_handed is not None
            trips.append(1000 * (onset_at - st.first_handed))
            for _ in range(10):  # let the burst pass before the next one
                await src.read()
    finally:
        await sink.aclose()
        await src.aclose()
    median = float(np.median(trips))
    print(f"\ndevice round trip (latency='low', 10 ms blocks in and out): median {median:.1f} ms, {trips}")
    assert 0 < median < 100
