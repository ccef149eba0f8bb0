"""Monotonic-deadline clocks for endpoints without a sound card (``.wav`` files, ``null``).

Frame ``k`` of a source is "recorded" at ``t0 + (k + 1) * 20 ms`` and block ``k`` of a sink "plays" at
``t0 + k * block``: deadlines are computed from the start, never from the previous wake-up, so timing
does not drift (STYLE.md 5, after aiortc's ``AudioStreamTrack.recv``). ``t0`` and ``start_unix`` are taken
together so files can be lined up with wall-clock logs (issue #3 transcript ``*_start_unix``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import numpy as np

from bridge.errors import AudioError
from bridge.media.base import FRAME_SAMPLES, RATE, SINK_BLOCK_SAMPLES, Pull

log = logging.getLogger(__name__)

FRAME_S = FRAME_SAMPLES / RATE


class PacedSource:
    """Base for sources paced by deadlines; subclasses supply ``_frame(index)``.

    A reader that falls more than ``max_lag_ms`` behind skips ahead (counted in ``dropped``), the way a
    sound card overwrites what nobody read: the source stays real time.
    """

    def __init__(self, *, max_lag_ms: float = 200) -> None:
        self.dropped = 0
        self.start_unix: float | None = None
        self.start_mono: float | None = None
        self._max_lag = max_lag_ms / 1000
        self._index = 0

    @property
    def frames_read(self) -> int:
        return self._index

    async def start(self) -> None:
        if self.start_mono is None:
            self.start_mono = time.monotonic()
            self.start_unix = time.time()

    async def read(self) -> np.ndarray:
        if self.start_mono is None:
            raise AudioError("audio source read before start()")
        deadline = self.start_mono + (self._index + 1) * FRAME_S
        now = time.monotonic()
        if now < deadline:
            await asyncio.sleep(deadline - now)
        elif now - deadline > self._max_lag:
            skip = int((now - deadline) / FRAME_S)
            self._index += skip
            self.dropped += skip
        frame = self._frame(self._index)
        self._index += 1
        return frame

    def _frame(self, index: int) -> np.ndarray:
        raise NotImplementedError

    async def aclose(self) -> None:
        return None


class PacedSink:
    """Base for sinks paced by deadlines: pulls 10 ms blocks like a device and hands them to ``_write``.

    Block ``k`` is pulled at ``t0 + k * block`` (the moment its first sample "plays"; output latency 0).
    After an event-loop stall the missed blocks are pulled at once, so sample ``n`` of the output is
    always ``n / rate`` seconds after the start.
    """

    output_latency = 0.0

    def __init__(self, *, block: int = SINK_BLOCK_SAMPLES) -> None:
        self.block = block
        self.start_unix: float | None = None
        self.start_mono: float | None = None
        self.blocks = 0
        self.late_blocks = 0
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    async def start(self, pull: Pull) -> None:
        if self._task is not None:
            raise AudioError("audio sink already started")
        self._open()
        self.start_mono = time.monotonic()
        self.start_unix = time.time()
        self._task = asyncio.create_task(self._run(pull), name=f"{type(self).__name__}-clock")

    async def _run(self, pull: Pull) -> None:
        assert self.start_mono is not None
        period = self.block / RATE
        while True:
            deadline = self.start_mono + self.blocks * period
            now = time.monotonic()
            if now < deadline:
                await asyncio.sleep(deadline - now)
            elif now - deadline > period:
                self.late_blocks += 1
            self._write(pull(self.block))
            self.blocks += 1

    @property
    def samples_written(self) -> int:
        return self.blocks * self.block

    def _open(self) -> None:
        """Open the destination (called from ``start``; constructors do no I/O)."""

    def _write(self, block: np.ndarray) -> None:
        """Consume one pulled block."""

    def _close(self) -> None:
        """Finalise the destination."""

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            if not task.cancelled() and task.exception() is not None:
                log.warning("%s clock failed: %r", type(self).__name__, task.exception())
        self._close()
