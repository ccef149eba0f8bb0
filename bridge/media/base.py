"""The two audio seams: :class:`AudioSource` (a microphone) and :class:`AudioSink` (a speaker).

Every implementation (sounddevice, ``.wav`` file, null) speaks the same format, so nothing above this
package resamples: 48 kHz, mono, int16, 20 ms (960-sample) frames in, any block size out
(docs/architecture.md "Media"). A source is paced by its own clock (the sound card, or monotonic
deadlines for files); a sink pulls from its own clock too, which is what makes playout accounting honest.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

import numpy as np

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


@runtime_checkable
class AudioSource(Protocol):
    """A microphone: ``read()`` returns the next 20 ms frame, waiting for its clock to produce it."""

    dropped: int
    """Frames lost because the reader lagged (drop-oldest)."""

    async def start(self) -> None: ...

    async def read(self) -> np.ndarray:
        """The next :data:`FRAME_SAMPLES` int16 samples (48 kHz mono)."""
        ...

    async def aclose(self) -> None: ...


@runtime_checkable
class AudioSink(Protocol):
    """A speaker: after ``start(pull)`` it calls ``pull(n)`` once per block from its own clock."""

    output_latency: float
    """Seconds from a block being pulled to it being heard (0 for files; PortAudio's figure for devices)."""

    async def start(self, pull: Pull) -> None: ...

    async def aclose(self) -> None: ...


def silence(n: int = FRAME_SAMPLES) -> np.ndarray:
    return np.zeros(n, dtype=np.int16)
