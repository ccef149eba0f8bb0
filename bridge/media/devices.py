"""Sound-card endpoints: a microphone and a speaker through sounddevice's raw PortAudio streams.

Device lookup and format negotiation are in :mod:`bridge.media.portaudio`; cutting the input callback's
blocks into 20 ms frames is :class:`FrameCutter`. What is left here is the two streams and the crossing
out of PortAudio's threads, after sounddevice's ``examples/asyncio_generators.py``: the input callback
cuts 20 ms frames and hands them to the loop with ``call_soon_threadsafe``, or, once a consumer is set
with :meth:`DeviceSource.capture_to`, to that consumer right there in PortAudio's thread (the WebRTC
uplink encodes and sends from it: :mod:`bridge.rtc.fastpath`); the output callback only calls ``pull(n)``
(a short lock, no waiting) and counts status flags. Neither blocks.

Filters and taps (echo cancellation, :mod:`bridge.media.aec`) are installed with
:meth:`DeviceSource.add_filter` and :meth:`DeviceSink.add_tap` (or the ``filters=`` / ``taps=`` constructor
arguments). A filter processes each frame in the capture thread before the consumer (or the queue) gets it,
with the time PortAudio says its last sample was captured (``inputBufferAdcTime``); a tap sees each block
exactly as it is handed to PortAudio, with the time PortAudio says its first sample reaches the speaker
(``outputBufferDacTime``), both converted to ``time.monotonic``. The installed set is an immutable tuple
swapped in one assignment: the audio threads never take a lock for it. Errors inside a callback are counted
and the first one logged (:class:`bridge.faults.Faults`); a stream that stops while nobody closed it is a
fatal fault (the device is gone), which the endpoint's owner turns into a typed end.

Both use sounddevice's *raw* streams (a CFFI buffer per callback, not a NumPy array): the callbacks run
200 (output) and 100 (input) times a second, and the array wrapper (``np.frombuffer`` plus a reshape and
an ``import`` per call) cost more than the work done in them (docs/benchmarks.md, CPU).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Iterable
from typing import Any, ClassVar

import numpy as np

from bridge.errors import AudioError
from bridge.media.base import (
    DEVICE_BLOCK_SAMPLES,
    DEVICE_INPUT_BLOCK_MS,
    FRAME_MS,
    FRAME_SAMPLES,
    RATE,
    AudioSink,
    AudioSource,
    FrameConsumer,
    PlaybackTap,
    Pull,
    SourceFilter,
)
from bridge.media.portaudio import (
    DeviceInfo,
    choose_format,
    device_name,
    list_devices,
    name_this_thread,
    resolve_device,
    sounddevice_module,
)
from bridge.media.resample import LinearResampler, to_mono
from bridge.media.timeline import PlayoutTimeline

log = logging.getLogger(__name__)

MIC_THREAD = "bridge-mic"  # PortAudio's input callback thread (encodes and sends the WebRTC uplink)
SPEAKER_THREAD = "bridge-speaker"  # PortAudio's output callback thread

__all__ = ["DeviceInfo", "DeviceSink", "DeviceSource", "FrameCutter", "list_devices", "resolve_device"]


class FrameCutter:
    """Interleaved int16 blocks at the device's rate and channel count -> whole 48 kHz mono 20 ms frames,
    each with the capture time of its last sample (what is left over waits for the next block)."""

    def __init__(self, rate: int, channels: int) -> None:
        self.rate = rate
        self.channels = channels
        self._resampler = LinearResampler(rate, RATE) if rate != RATE else None
        self._pending: list[np.ndarray] = []
        self._pending_n = 0

    def cut(self, block: bytes, captured: float) -> list[tuple[np.ndarray, float]]:
        """``captured``: monotonic time of the block's last sample."""
        mono = to_mono(np.frombuffer(block, dtype=np.int16).reshape(-1, self.channels))
        if self._resampler is not None:
            mono = self._resampler.process(mono)
        self._pending.append(mono)
        self._pending_n += len(mono)
        if self._pending_n < FRAME_SAMPLES:
            return []
        data = np.concatenate(self._pending) if len(self._pending) > 1 else self._pending[0]
        whole = len(data) // FRAME_SAMPLES * FRAME_SAMPLES
        cut = []
        for start in range(0, whole, FRAME_SAMPLES):
            end_offset = len(data) - (start + FRAME_SAMPLES)  # samples captured after this frame ended
            cut.append((data[start : start + FRAME_SAMPLES].copy(), captured - end_offset / RATE))
        rest = data[whole:]
        self._pending = [rest] if len(rest) else []
        self._pending_n = len(rest)
        return cut


class DeviceSource(AudioSource):
    """A microphone through ``sd.RawInputStream``: 20 ms frames, drop-oldest queue of ``queue_frames``."""

    has_capture_thread: ClassVar[bool] = True

    def __init__(
        self,
        device: str | int | None = None,
        *,
        queue_frames: int = 10,
        latency: str = "low",
        block_ms: int = DEVICE_INPUT_BLOCK_MS,
        filters: Iterable[SourceFilter] = (),
    ) -> None:
        super().__init__()
        self.device = device
        self.block_ms = block_ms
        self.latency_hint = latency
        self.status_flags = 0
        self.input_overflows = 0
        self.input_latency = 0.0
        self.rate = RATE
        self.channels = 1
        self.name = ""
        self.last_frame_mono: float | None = None
        """Monotonic time the last sample of the most recently delivered frame was captured (callback time)."""
        self._max = queue_frames
        self._queue: deque[tuple[np.ndarray, float]] = deque()
        self._ready = asyncio.Event()
        self._cutter = FrameCutter(RATE, 1)
        self._cb_blocks: list[bytes] = []  # PortAudio thread only: blocks of the frame being captured
        self._cb_frames = 0
        self._named = False
        self._consumer: FrameConsumer | None = None
        self._filters: tuple[SourceFilter, ...] = tuple(filters)
        self.adc_lag = 0.0
        """Seconds from the ADC capturing the last sample of a block to the callback (PortAudio's timestamps)."""
        self._stream: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    def add_filter(self, f: SourceFilter) -> None:
        """Run ``f`` on every frame, after the filters already installed (any thread)."""
        self._filters = (*self._filters, f)

    def remove_filter(self, f: SourceFilter) -> None:
        self._filters = tuple(x for x in self._filters if x is not f)

    @property
    def filters(self) -> tuple[SourceFilter, ...]:
        return self._filters

    async def start(self) -> None:
        if self._stream is not None:
            return
        sd = sounddevice_module()
        index = resolve_device(self.device, "input")
        self.rate, self.channels = choose_format(sd, index, "input")
        self.name = device_name(sd, index, "input")
        self._cutter = FrameCutter(self.rate, self.channels)
        self._loop = asyncio.get_running_loop()
        try:
            stream = sd.RawInputStream(
                device=index,
                samplerate=self.rate,
                channels=self.channels,
                dtype="int16",
                # 10 ms blocks: PortAudio/ALSA buffers two blocks, so this halves input latency
                # against 20 ms blocks (measured via PulseAudio: 20 ms vs 40 ms); frames are re-cut to 20 ms.
                blocksize=self.rate * self.block_ms // 1000,
                latency=self.latency_hint,
                callback=self._callback,
                finished_callback=self._finished,
            )
            stream.start()
        except sd.PortAudioError as exc:
            raise AudioError(f"cannot open input device {self.name!r}: {exc}") from exc
        self._stream = stream
        self.input_latency = float(stream.latency)
        log.info(
            "input %r: %d Hz, %d ch, latency %.1f ms", self.name, self.rate, self.channels, 1000 * self.input_latency
        )

    def _callback(self, indata: Any, frames: int, time_info: Any, status: Any) -> None:
        # PortAudio thread: count, copy (``indata`` is a CFFI buffer of interleaved int16), hand over.
        # Nothing here waits, and nothing raises out of it.
        now = time.monotonic()
        if not self._named:
            self._named = True
            name_this_thread(MIC_THREAD)
        if status:
            self.status_flags += 1
            if status.input_overflow:
                self.input_overflows += 1
        adc = time_info.inputBufferAdcTime if time_info is not None else 0.0
        if adc > 0:  # PortAudio's stream clock: ADC time of the block's first sample. Through PulseAudio's ALSA
            # plugin it can lie after the callback, which cannot be: then the callback time is the better one.
            self.adc_lag = max(0.0, time_info.currentTime - adc - (frames - 1) / self.rate)
        loop = self._loop
        if loop is None:
            return
        # Cut frames once per 20 ms, not once per 10 ms block: a frame cannot leave before it is complete
        # anyway, so this halves the cross-thread hand-overs at no latency cost.
        self._cb_blocks.append(bytes(indata))
        self._cb_frames += frames
        if self._cb_frames * 1000 < self.rate * FRAME_MS:
            return
        block = b"".join(self._cb_blocks)
        self._cb_blocks, self._cb_frames = [], 0
        try:
            cut = self._cutter.cut(block, now)
            filters = self._filters
            if filters:
                cut = [(self._filter(filters, frame, captured), captured) for frame, captured in cut]
            consumer = self._consumer
            if consumer is not None:
                for frame, captured in cut:
                    self.last_frame_mono = captured
                    consumer(frame, captured)
                return
        except Exception as exc:  # a bug must not kill the audio thread: count it, log the first
            self.faults.record(exc)
            return
        if not cut:  # a resampled stream can fall a few samples short of a frame
            return
        try:
            loop.call_soon_threadsafe(self._enqueue, cut)
        except RuntimeError:  # loop closed while the stream was stopping
            pass

    def _filter(self, filters: tuple[SourceFilter, ...], frame: np.ndarray, captured: float) -> np.ndarray:
        at = captured - self.adc_lag
        for f in filters:
            try:
                frame = f.process(frame, at)
            except Exception as exc:  # a failing filter passes the frame on unfiltered: counted, first logged
                self.faults.record(exc)
        return frame

    def capture_to(self, consumer: FrameConsumer | None) -> None:
        self._consumer = consumer

    def _finished(self) -> None:
        loop = self._loop
        if loop is None or self._closed:
            return
        # PortAudio ended the stream and nobody closed it: the device is gone (unplugged, server restarted)
        self.faults.fatal(AudioError(f"input device {self.name!r} stopped"))
        try:
            loop.call_soon_threadsafe(self._ready.set)
        except RuntimeError:
            pass

    def _enqueue(self, cut: list[tuple[np.ndarray, float]]) -> None:
        if self._closed:
            return
        for item in cut:
            if len(self._queue) >= self._max:
                self._queue.popleft()
                self.dropped += 1
            self._queue.append(item)
        self._ready.set()

    async def read_frame(self) -> tuple[np.ndarray, float]:
        while not self._queue:
            if self._closed or self._stream is None:
                raise AudioError("input device is closed")
            if not self._stream.active:
                raise AudioError(f"input device {self.name!r} stopped")
            self._ready.clear()
            await self._ready.wait()
        frame, captured = self._queue.popleft()
        self.last_frame_mono = captured
        return frame, captured

    def stats(self) -> dict[str, int]:
        return {**super().stats(), "overflows": self.input_overflows}

    def describe(self) -> dict[str, object]:
        return {"kind": "device", "name": self.name or str(self.device or "default"), "rate": self.rate}

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._ready.set()
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.close(ignore_errors=True)


class DeviceSink(AudioSink):
    """A speaker through ``sd.RawOutputStream``: small blocks (5 ms), ``latency='low'`` unless told (echo
    cancellation wants a steadier one), pull per callback."""

    def __init__(
        self,
        device: str | int | None = None,
        *,
        block: int = DEVICE_BLOCK_SAMPLES,
        latency: str | float = "low",
        taps: Iterable[PlaybackTap] = (),
    ) -> None:
        super().__init__()
        self.device = device
        self.block = block
        self.latency_hint = latency
        self.underruns = 0
        self.status_flags = 0
        self.blocks = 0
        self.rate = RATE
        self.channels = 1
        self.name = ""
        self._pull: Pull | None = None
        self._resampler: LinearResampler | None = None
        self._leftover = np.zeros(0, dtype=np.int16)
        self._taps: tuple[PlaybackTap, ...] = tuple(taps)
        self._timeline = PlayoutTimeline(self.rate)
        self._stream: Any = None
        self._closed = False

    def add_tap(self, tap: PlaybackTap) -> None:
        """Show ``tap`` every block handed to the device from now on (any thread)."""
        self._taps = (*self._taps, tap)

    def remove_tap(self, tap: PlaybackTap) -> None:
        self._taps = tuple(x for x in self._taps if x is not tap)

    @property
    def taps(self) -> tuple[PlaybackTap, ...]:
        return self._taps

    async def start(self, pull: Pull) -> None:
        if self._stream is not None:
            raise AudioError("output device already started")
        sd = sounddevice_module()
        index = resolve_device(self.device, "output")
        self.rate, self.channels = choose_format(sd, index, "output")
        self._timeline = PlayoutTimeline(self.rate)
        self.name = device_name(sd, index, "output")
        if self.rate != RATE:
            self._resampler = LinearResampler(RATE, self.rate)
        self._pull = pull
        try:
            stream = sd.RawOutputStream(
                device=index,
                samplerate=self.rate,
                channels=self.channels,
                dtype="int16",
                blocksize=max(1, round(self.block * self.rate / RATE)),
                latency=self.latency_hint,
                callback=self._callback,
                finished_callback=self._finished,
            )
            stream.start()
        except sd.PortAudioError as exc:
            raise AudioError(f"cannot open output device {self.name!r}: {exc}") from exc
        self._stream = stream
        self.output_latency = float(stream.latency)
        log.info(
            "output %r: %d Hz, %d ch, latency %.1f ms", self.name, self.rate, self.channels, 1000 * self.output_latency
        )

    def _callback(self, outdata: Any, frames: int, time_info: Any, status: Any) -> None:
        # PortAudio thread: one pull (never waits), status counters, no logging on the hot path.
        # ``outdata`` is a CFFI buffer of interleaved int16: slice assignment copies an array's bytes in.
        if status:
            self.status_flags += 1
            if status.output_underflow:
                self.underruns += 1
        if not self.blocks:
            name_this_thread(SPEAKER_THREAD)
        self.blocks += 1
        taps = self._taps
        at = 0.0
        if taps:  # when the first sample of this block sounds, on time.monotonic
            now = time.monotonic()
            dac = time_info.outputBufferDacTime if time_info is not None else 0.0
            if dac > 0:
                underflow = bool(status) and bool(status.output_underflow)
                at = self._timeline.at(frames, now, dac, time_info.currentTime, underflow)
            else:
                at = now + self.output_latency
        played: list[tuple[np.ndarray, float]] = []
        try:
            data = self._render(frames, at, played if taps else None)
        except Exception as exc:  # a bug upstream must not kill the audio thread: play silence, count it
            self.faults.record(exc)
            outdata[:] = bytes(len(outdata))
            played = [(np.zeros(round(frames * RATE / self.rate), dtype=np.int16), at)]
        else:
            outdata[:] = data if self.channels == 1 else np.repeat(data, self.channels)
        for tap in taps:
            for pcm, t in played:
                try:
                    tap.played(pcm, t)
                except Exception as exc:  # a failing tap must not silence the speaker: counted, first logged
                    self.faults.record(exc)

    def _render(self, frames: int, at: float, played: list[tuple[np.ndarray, float]] | None) -> np.ndarray:
        """``frames`` device samples; what was pulled (48 kHz) goes to ``played`` with the time it sounds."""
        assert self._pull is not None
        if self._resampler is None:
            data = self._pull(frames)
            if played is not None:
                played.append((data, at))
            return data
        out = self._leftover
        while len(out) < frames:
            need = self._resampler.inputs_needed(frames - len(out))
            pulled = self._pull(max(1, need))
            if played is not None:
                played.append((pulled, at + len(out) / self.rate))
            out = np.concatenate([out, self._resampler.process(pulled)])
        self._leftover = out[frames:]
        return out[:frames]

    def _finished(self) -> None:
        if not self._closed:  # PortAudio ended the stream and nobody closed it: the device is gone
            self.faults.fatal(AudioError(f"output device {self.name!r} stopped"))

    def stats(self) -> dict[str, int]:
        return {**super().stats(), "underruns": self.underruns}

    def describe(self) -> dict[str, object]:
        return {"kind": "device", "name": self.name or str(self.device or "default"), "rate": self.rate}

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.close(ignore_errors=True)
