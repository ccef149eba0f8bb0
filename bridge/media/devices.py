"""Sound-card endpoints through sounddevice (PortAudio), and device lookup for ``DEV`` strings.

``sounddevice`` is imported lazily through :func:`sounddevice_module`, which turns the ``OSError`` raised
when libportaudio2 is absent into one clear :class:`AudioError` (ENVIRONMENT.md); ``.wav`` and ``null``
devices never import it.

Crossing from the PortAudio thread follows sounddevice's ``examples/asyncio_generators.py``: the input
callback cuts 20 ms frames and hands them to the loop with ``call_soon_threadsafe``, or, once a consumer
is set with :meth:`DeviceSource.capture_to`, to that consumer right there in PortAudio's thread (the
WebRTC uplink encodes and sends from it: :mod:`bridge.rtc.fastpath`); the output callback only calls
``pull(n)`` (a short lock, no waiting) and counts status flags. Neither blocks.

Both use sounddevice's *raw* streams (a CFFI buffer per callback, not a NumPy array): the callbacks run
200 (output) and 100 (input) times a second, and the array wrapper (``np.frombuffer`` plus a reshape and
an ``import`` per call) cost more than the work done in them (docs/benchmarks.md, CPU).
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Literal

import numpy as np

from bridge.errors import AudioError
from bridge.media.base import DEVICE_BLOCK_SAMPLES, DEVICE_INPUT_BLOCK_MS, FRAME_MS, FRAME_SAMPLES, RATE, Pull
from bridge.media.resample import LinearResampler, to_mono

log = logging.getLogger(__name__)

Kind = Literal["input", "output"]
FrameConsumer = Callable[[np.ndarray, float], None]
"""``consumer(pcm, captured)``: one 20 ms frame and the monotonic time its last sample was captured."""
PORTAUDIO_MISSING = "PortAudio is missing: apt-get install libportaudio2"
MIC_THREAD = "bridge-mic"  # PortAudio's input callback thread (encodes and sends the WebRTC uplink)
SPEAKER_THREAD = "bridge-speaker"  # PortAudio's output callback thread


def sounddevice_module() -> ModuleType:
    """``import sounddevice``, with a missing PortAudio mapped to :class:`AudioError`."""
    try:
        import sounddevice
    except OSError as exc:  # "PortAudio library not found"
        raise AudioError(PORTAUDIO_MISSING) from exc
    return sounddevice


def rescan() -> None:
    """Re-initialise PortAudio so devices (e.g. a sound server started after import) are seen.

    PortAudio enumerates devices once, at ``Pa_Initialize``; sounddevice documents ``_terminate()`` and
    ``_initialize()`` for exactly this. No stream may be open.
    """
    sd = sounddevice_module()
    sd._terminate()
    sd._initialize()


@dataclass(frozen=True)
class DeviceInfo:
    index: int
    name: str
    hostapi: str
    max_input_channels: int
    max_output_channels: int
    default_samplerate: float
    default_input: bool
    default_output: bool

    def has(self, kind: Kind) -> bool:
        return (self.max_input_channels if kind == "input" else self.max_output_channels) > 0

    def label(self) -> str:
        return f"[{self.index}] {self.name} ({self.hostapi})"


def list_devices() -> list[DeviceInfo]:
    """Every PortAudio device, with default marks. Empty when no sound system answers."""
    sd = sounddevice_module()
    try:
        devices = sd.query_devices()
        hostapis = sd.query_hostapis()
    except sd.PortAudioError as exc:
        raise AudioError(f"cannot list audio devices: {exc}") from exc
    default_in, default_out = _default_indices(sd)
    return [
        DeviceInfo(
            index=int(d["index"]),
            name=str(d["name"]),
            hostapi=str(hostapis[int(d["hostapi"])]["name"]),
            max_input_channels=int(d["max_input_channels"]),
            max_output_channels=int(d["max_output_channels"]),
            default_samplerate=float(d["default_samplerate"]),
            default_input=int(d["index"]) == default_in,
            default_output=int(d["index"]) == default_out,
        )
        for d in devices
    ]


def _default_indices(sd: Any) -> tuple[int, int]:
    dev = sd.default.device
    out: list[int] = []
    for i, kind in enumerate(("input", "output")):
        value = dev[i]
        if isinstance(value, str):
            try:
                value = sd.query_devices(value, kind)["index"]
            except (ValueError, sd.PortAudioError):
                value = -1
        out.append(-1 if value is None else int(value))
    return out[0], out[1]


def resolve_device(spec: str | int | None, kind: Kind) -> int | None:
    """``DEV`` to a PortAudio index: an index, a case-insensitive name substring, or None (default).

    An exact (case-insensitive) name wins over substring matches; zero or several matches raise one
    :class:`AudioError` that lists the candidates.
    """
    devices = [d for d in list_devices() if d.has(kind)]
    if not devices:
        raise AudioError(f"no audio {kind} devices found (is a sound server running? try `bridge devices`)")
    if spec is None or (isinstance(spec, str) and not spec.strip()):
        if not any(getattr(d, f"default_{kind}") for d in devices):
            raise AudioError(f"no default {kind} device; choose one with --{kind} (see `bridge devices`)")
        return None
    candidates = ", ".join(d.label() for d in devices)
    text = str(spec).strip()
    if isinstance(spec, int) or text.lstrip("-").isdigit():
        index = int(text)
        for d in devices:
            if d.index == index:
                return index
        raise AudioError(f"no {kind} device with index {index}; {kind} devices: {candidates}")
    needle = text.casefold()
    exact = [d for d in devices if d.name.casefold() == needle]
    if len(exact) == 1:
        return exact[0].index
    matches = exact or [d for d in devices if needle in d.name.casefold()]
    if len(matches) == 1:
        return matches[0].index
    if not matches:
        raise AudioError(f"no {kind} device matches {text!r}; {kind} devices: {candidates}")
    listed = ", ".join(d.label() for d in matches)
    raise AudioError(f"{kind} device {text!r} is ambiguous: {listed} (use an index)")


def _choose_format(sd: Any, device: int | None, kind: Kind) -> tuple[int, int]:
    """(rate, channels): 48 kHz mono when the device takes it, else its default rate / 2 channels."""
    check = sd.check_input_settings if kind == "input" else sd.check_output_settings
    info = sd.query_devices(device, kind)
    for rate in (RATE, int(info["default_samplerate"])):
        for channels in (1, 2):
            try:
                check(device=device, samplerate=rate, channels=channels, dtype="int16")
            except (sd.PortAudioError, ValueError):
                continue
            return rate, channels
    raise AudioError(f"{kind} device {info['name']!r} accepts neither 48 kHz nor its default rate (int16)")


def _device_name(sd: Any, device: int | None, kind: Kind) -> str:
    try:
        return str(sd.query_devices(device, kind)["name"])
    except (ValueError, sd.PortAudioError):
        return "default"


def name_this_thread(name: str) -> None:
    """Give the calling OS thread a name (Linux ``prctl(PR_SET_NAME)``, 15 bytes), so that ``top -H`` and
    ``python -m bridge.bench.cpu --threads`` tell PortAudio's microphone and speaker threads apart."""
    try:
        libc = ctypes.CDLL(None)
        libc.prctl(15, name.encode()[:15], 0, 0, 0)  # PR_SET_NAME
    except (OSError, AttributeError):  # not Linux: the threads keep their names
        pass


class DeviceSource:
    """A microphone through ``sd.InputStream``: 20 ms frames, drop-oldest queue of ``queue_frames``."""

    def __init__(
        self,
        device: str | int | None = None,
        *,
        queue_frames: int = 10,
        latency: str = "low",
        block_ms: int = DEVICE_INPUT_BLOCK_MS,
    ) -> None:
        self.device = device
        self.block_ms = block_ms
        self.latency_hint = latency
        self.dropped = 0
        self.status_flags = 0
        self.input_overflows = 0
        self.input_latency = 0.0
        self.rate = RATE
        self.channels = 1
        self.name = ""
        self.last_frame_mono: float | None = None
        """Monotonic time the last sample of the most recently read frame was captured (callback time)."""
        self._max = queue_frames
        self._queue: deque[tuple[np.ndarray, float]] = deque()
        self._ready = asyncio.Event()
        self._pending: list[np.ndarray] = []
        self._pending_n = 0
        self._cb_blocks: list[bytes] = []  # PortAudio thread only: blocks of the frame being captured
        self._cb_frames = 0
        self._named = False
        self._consumer: FrameConsumer | None = None
        self._resampler: LinearResampler | None = None
        self._stream: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    async def start(self) -> None:
        if self._stream is not None:
            return
        sd = sounddevice_module()
        index = resolve_device(self.device, "input")
        self.rate, self.channels = _choose_format(sd, index, "input")
        self.name = _device_name(sd, index, "input")
        if self.rate != RATE:
            self._resampler = LinearResampler(self.rate, RATE)
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
        # Nothing here waits.
        now = time.monotonic()
        if not self._named:
            self._named = True
            name_this_thread(MIC_THREAD)
        if status:
            self.status_flags += 1
            if status.input_overflow:
                self.input_overflows += 1
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
        cut = self._cut(block, now)
        if not cut:  # a resampled stream can fall a few samples short of a frame
            return
        consumer = self._consumer
        if consumer is not None:
            for frame, captured in cut:
                self.last_frame_mono = captured
                consumer(frame, captured)
            return
        try:
            loop.call_soon_threadsafe(self._enqueue, cut)
        except RuntimeError:  # loop closed while the stream was stopping
            pass

    def capture_to(self, consumer: FrameConsumer | None) -> bool:
        """Hand every frame to ``consumer(pcm, captured)`` in PortAudio's thread instead of queueing it for
        :meth:`read` (``None``: queue again). The consumer must not block or raise; ``read()`` then returns
        no frames and only raises when the device stops or closes. Returns True (it is supported)."""
        self._consumer = consumer
        return True

    def _finished(self) -> None:
        loop = self._loop
        if loop is not None and not self._closed:
            try:
                loop.call_soon_threadsafe(self._ready.set)
            except RuntimeError:
                pass

    def _cut(self, block: bytes, captured: float) -> list[tuple[np.ndarray, float]]:
        """PortAudio thread: interleaved int16 at the device rate -> whole 48 kHz mono frames, each with the
        capture time of its last sample (the rest waits for the next block)."""
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

    def _enqueue(self, cut: list[tuple[np.ndarray, float]]) -> None:
        if self._closed:
            return
        for item in cut:
            if len(self._queue) >= self._max:
                self._queue.popleft()
                self.dropped += 1
            self._queue.append(item)
        self._ready.set()

    async def read(self) -> np.ndarray:
        while not self._queue:
            if self._closed or self._stream is None:
                raise AudioError("input device is closed")
            if not self._stream.active:
                raise AudioError(f"input device {self.name!r} stopped")
            self._ready.clear()
            await self._ready.wait()
        frame, captured = self._queue.popleft()
        self.last_frame_mono = captured
        return frame

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._ready.set()
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.close(ignore_errors=True)


class DeviceSink:
    """A speaker through ``sd.OutputStream``: small blocks (5 ms), ``latency='low'``, pull per callback."""

    def __init__(
        self, device: str | int | None = None, *, block: int = DEVICE_BLOCK_SAMPLES, latency: str = "low"
    ) -> None:
        self.device = device
        self.block = block
        self.latency_hint = latency
        self.output_latency = 0.0
        self.underruns = 0
        self.status_flags = 0
        self.callback_errors = 0
        self.blocks = 0
        self.rate = RATE
        self.channels = 1
        self.name = ""
        self._pull: Pull | None = None
        self._resampler: LinearResampler | None = None
        self._leftover = np.zeros(0, dtype=np.int16)
        self._stream: Any = None
        self._closed = False

    async def start(self, pull: Pull) -> None:
        if self._stream is not None:
            raise AudioError("output device already started")
        sd = sounddevice_module()
        index = resolve_device(self.device, "output")
        self.rate, self.channels = _choose_format(sd, index, "output")
        self.name = _device_name(sd, index, "output")
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
        try:
            data = self._render(frames)
        except Exception:  # a bug upstream must not kill the audio thread: play silence, count it
            self.callback_errors += 1
            outdata[:] = bytes(len(outdata))
            return
        outdata[:] = data if self.channels == 1 else np.repeat(data, self.channels)

    def _render(self, frames: int) -> np.ndarray:
        assert self._pull is not None
        if self._resampler is None:
            return self._pull(frames)
        out = self._leftover
        while len(out) < frames:
            need = self._resampler.inputs_needed(frames - len(out))
            out = np.concatenate([out, self._resampler.process(self._pull(max(1, need)))])
        self._leftover = out[frames:]
        return out[:frames]

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.close(ignore_errors=True)
