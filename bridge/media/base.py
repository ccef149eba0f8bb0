"""The two audio seams: :class:`AudioSource` (a microphone) and :class:`AudioSink` (a speaker).

Every implementation (sounddevice, ``.wav`` file, null) speaks the same format, so nothing above this
package resamples: 48 kHz, mono, int16, 20 ms (960-sample) frames in, any block size out
(docs/architecture.md "Media"). A source is paced by its own clock (the sound card, or monotonic
deadlines for files); a sink pulls from its own clock too, which is what makes playout accounting honest.

What an endpoint can do beyond the core methods is declared here, with a default for endpoints that
cannot, never discovered by probing attributes:

- ``AudioSource.has_capture_thread`` / :meth:`AudioSource.capture_to`: a sound card hands each frame to a
  consumer in PortAudio's own input thread (the WebRTC uplink encodes and sends right there);
- :meth:`AudioSource.read_frame`: each frame with the monotonic time its last sample was captured (exact
  for paced files, the callback time for a sound card);
- ``faults``: errors in the endpoint's own thread or timer (:class:`bridge.faults.Faults`); a fatal one means
  the device is gone, and whoever owns the endpoint ends with a typed reason;
- :meth:`stats` / :meth:`describe`: counters for the ``stats`` line, fields for the ``session`` line.

Filters that must run where the audio already is (echo cancellation: near end in the capture thread, far
end where the output callback hands samples to PortAudio) plug in through :class:`SourceFilter` and
:class:`PlaybackTap`.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Callable
from typing import ClassVar, Protocol

import numpy as np

from bridge.errors import AudioError
from bridge.faults import Faults

log = logging.getLogger(__name__)

RATE = 48_000
"""Sample rate of everything inside the bridge's media layer (the WebRTC/Opus clock)."""
CHANNELS = 1
FRAME_MS = 20
FRAME_SAMPLES = RATE * FRAME_MS // 1000  # 960
SINK_BLOCK_MS = 10
SINK_BLOCK_SAMPLES = RATE * SINK_BLOCK_MS // 1000  # 480: small output blocks keep barge-in fast
DEVICE_BLOCK_MS = 5
"""Sound-card blocks are smaller still: PortAudio then reports 10 ms output latency instead of 20, which took
mouth-to-ear through the PulseAudio virtual devices from ~96 to ~84 ms (docs/benchmarks.md)."""
DEVICE_BLOCK_SAMPLES = RATE * DEVICE_BLOCK_MS // 1000  # 240
DEVICE_INPUT_BLOCK_MS = 10  # microphone blocks: PortAudio buffers two, so 20 ms blocks would add 20 ms
SAMPLES_PER_MS = RATE // 1000  # 48

Pull = Callable[[int], np.ndarray]
"""``pull(n)`` returns exactly ``n`` int16 samples at 48 kHz; called from the sink's clock, never blocks."""
FrameConsumer = Callable[[np.ndarray, float], None]
"""``consumer(pcm, captured)``: one 20 ms frame and the monotonic time its last sample was captured."""


class SourceFilter(Protocol):
    """Processes each 20 ms microphone frame where it is captured (PortAudio's input thread for a sound
    card), before anyone else sees it; e.g. echo cancellation. Must not block; returns the frame to pass on
    (48 kHz mono int16, :data:`FRAME_SAMPLES` long)."""

    def process(self, pcm: np.ndarray, captured: float) -> np.ndarray: ...


class PlaybackTap(Protocol):
    """Sees exactly what the speaker plays: each block as it is handed to the device (after flushes, fades
    and gating), in the output thread, with the monotonic time its first sample reaches the speaker. Must
    not block (e.g. the far-end reference of echo cancellation)."""

    def played(self, pcm: np.ndarray, at: float) -> None: ...


class AudioSource(abc.ABC):
    """A microphone: :meth:`read_frame` returns the next 20 ms frame, waiting for its clock to produce it."""

    has_capture_thread: ClassVar[bool] = False
    """True when :meth:`capture_to` can deliver frames in the device's own capture thread."""

    def __init__(self) -> None:
        self.dropped = 0
        """Frames lost because the reader lagged (drop-oldest)."""
        self.faults = Faults(f"{type(self).__name__}", log)

    @abc.abstractmethod
    async def start(self) -> None:
        """Open the device (idempotent)."""

    @abc.abstractmethod
    async def read_frame(self) -> tuple[np.ndarray, float]:
        """The next :data:`FRAME_SAMPLES` int16 samples (48 kHz mono) and the monotonic time the frame's
        last sample was captured. Raises :class:`AudioError` once the device has stopped or closed."""

    async def read(self) -> np.ndarray:
        """The next frame's samples (see :meth:`read_frame`)."""
        pcm, _ = await self.read_frame()
        return pcm

    def capture_to(self, consumer: FrameConsumer | None) -> None:
        """Hand every frame to ``consumer`` in the capture thread instead of queueing it for :meth:`read`
        (``None``: queue again). The consumer must not block or raise. Only where
        :attr:`has_capture_thread`."""
        raise AudioError(f"{type(self).__name__} has no capture thread")

    @property
    def start_unix(self) -> float | None:
        """Wall-clock time of the first sample, where the source knows it exactly (files)."""
        return None

    def stats(self) -> dict[str, int]:
        """Counters for the ``stats`` line."""
        return {"dropped": self.dropped, "errors": self.faults.count}

    def describe(self) -> dict[str, object]:
        """Fields for the transcript's ``session`` line: kind, name or path."""
        return {"kind": type(self).__name__}

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Stop and release the device; idempotent."""


class AudioSink(abc.ABC):
    """A speaker: after ``start(pull)`` it calls ``pull(n)`` once per block from its own clock."""

    def __init__(self) -> None:
        self.output_latency = 0.0
        """Seconds from a block being pulled to it being heard (0 for files; PortAudio's figure for devices)."""
        self.faults = Faults(f"{type(self).__name__}", log)

    @abc.abstractmethod
    async def start(self, pull: Pull) -> None: ...

    @property
    def start_unix(self) -> float | None:
        """Wall-clock time of the first sample, where the sink knows it exactly (files)."""
        return None

    def stats(self) -> dict[str, int]:
        """Counters for the ``stats`` line."""
        return {"errors": self.faults.count}

    def describe(self) -> dict[str, object]:
        """Fields for the transcript's ``session`` line: kind, name or path."""
        return {"kind": type(self).__name__}

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Stop and release the device; idempotent."""


def silence(n: int = FRAME_SAMPLES) -> np.ndarray:
    return np.zeros(n, dtype=np.int16)
