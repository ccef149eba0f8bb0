"""Monotonic-deadline clocks for endpoints without a sound card (``.wav`` files, ``null``).

Frame ``k`` of a source is "recorded" at ``t0 + (k + 1) * 20 ms`` and block ``k`` of a sink "plays" at
``t0 + k * block``: deadlines are computed from the start, never from the previous wake-up, so timing
does not drift (STYLE.md 5, after aiortc's ``AudioStreamTrack.recv``). ``t0`` and ``start_unix`` are taken
together so files can be lined up with wall-clock logs (issue #3 transcript ``*_start_unix``).

Every clock starts on one shared 20 ms grid, so a source's frame deadlines coincide with every other
block deadline of a sink and the event loop wakes once for both. A wake-up costs more CPU than the work it
does here (docs/benchmarks.md, "What a wake-up costs"); with the sink's timer chain and the runtime's tick
on the grid, an echo call with a ``.wav`` microphone and a ``null`` speaker went from ~164 to ~123-147
event-loop wake-ups a second.
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np

from bridge.errors import AudioError
from bridge.media.base import FRAME_SAMPLES, RATE, SINK_BLOCK_SAMPLES, AudioSink, AudioSource, Pull
from bridge.media.clock import REAL_CLOCK, Clock, Timer

log = logging.getLogger(__name__)

FRAME_S = FRAME_SAMPLES / RATE
# uvloop's timers count whole milliseconds and fire up to half of one early: a block due within this is
# pulled now rather than by another wake-up (or a spin of zero-delay timers) a fraction of a ms later.
_EARLY_S = 0.001
_GRID_EPOCH = time.monotonic()


def grid_start(clock: Clock = REAL_CLOCK) -> tuple[float, float]:
    """The next point of the shared 20 ms grid, as (monotonic, Unix) time: the same instant on both clocks."""
    now, unix = clock.now(), time.time()
    start = _GRID_EPOCH + math.ceil((now - _GRID_EPOCH) / FRAME_S) * FRAME_S
    return start, unix + (start - now)


def until_grid(period: float) -> float:
    """Seconds to the next multiple of ``period`` (a multiple of 20 ms) on the shared grid: a periodic
    task that sleeps this long wakes together with the paced clocks."""
    return period - (time.monotonic() - _GRID_EPOCH) % period


class PacedSource(AudioSource):
    """Base for sources paced by deadlines; subclasses supply ``_frame(index)`` and ``describe()``.

    A reader that falls more than ``max_lag_ms`` behind skips ahead (counted in ``dropped``), the way a
    sound card overwrites what nobody read: the source stays real time. Frame ``k`` is "captured" at its
    deadline, which :meth:`read_frame` returns exactly.
    """

    def __init__(self, *, max_lag_ms: float = 200, clock: Clock = REAL_CLOCK) -> None:
        super().__init__()
        self._start_unix: float | None = None
        self.start_mono: float | None = None
        self._max_lag = max_lag_ms / 1000
        self._index = 0
        self._clock = clock

    @property
    def start_unix(self) -> float | None:
        return self._start_unix

    @property
    def frames_read(self) -> int:
        return self._index

    async def start(self) -> None:
        if self.start_mono is None:
            self.start_mono, self._start_unix = grid_start(self._clock)

    async def read_frame(self) -> tuple[np.ndarray, float]:
        if self.start_mono is None:
            raise AudioError("audio source read before start()")
        deadline = self.start_mono + (self._index + 1) * FRAME_S
        now = self._clock.now()
        if now < deadline:
            await self._clock.sleep(deadline - now)
        elif now - deadline > self._max_lag:
            skip = int((now - deadline) / FRAME_S + 1e-9)  # whole frames late (float steps land just short)
            self._index += skip
            self.dropped += skip
            deadline += skip * FRAME_S
        frame = self._frame(self._index)
        self._index += 1
        return frame, deadline

    def _frame(self, index: int) -> np.ndarray:
        raise NotImplementedError

    async def aclose(self) -> None:
        return None


class PacedSink(AudioSink):
    """Base for sinks paced by deadlines: pulls 10 ms blocks like a device and hands them to ``_write``.

    Block ``k`` is pulled at ``t0 + k * block`` (the moment its first sample "plays"; output latency 0).
    After an event-loop stall the missed blocks are pulled at once, so sample ``n`` of the output is
    always ``n / rate`` seconds after the start. If pulling or writing raises, the clock stops and the
    error is fatal (:attr:`faults`): whoever owns the sink ends the call with a typed reason.
    """

    def __init__(self, *, block: int = SINK_BLOCK_SAMPLES, clock: Clock = REAL_CLOCK) -> None:
        super().__init__()
        self.block = block
        self._start_unix: float | None = None
        self.start_mono: float | None = None
        self.blocks = 0
        self.late_blocks = 0
        self._period = block / RATE
        self._pull: Pull | None = None
        self._timer: Timer | None = None
        self._closed = False
        self._clock = clock

    @property
    def start_unix(self) -> float | None:
        return self._start_unix

    async def start(self, pull: Pull) -> None:
        if self._pull is not None:
            raise AudioError("audio sink already started")
        self._open()
        self._pull = pull
        self.start_mono, self._start_unix = grid_start(self._clock)
        self._arm()

    # The clock is a chain of loop timers, not a task: a task's wake-up (a future, a task step) costs this
    # VM ~25 us more than a bare timer callback, 100 times a second (python -m bridge.bench.wakeups).
    def _arm(self) -> None:
        assert self.start_mono is not None
        delay = self.start_mono + self.blocks * self._period - self._clock.now()
        self._timer = self._clock.call_later(max(0.0, delay), self._tick)

    def _tick(self) -> None:
        """Pull every block that is due (after a stall, the missed ones at once), then wait for the next."""
        assert self.start_mono is not None and self._pull is not None
        self._timer = None
        now = self._clock.now()
        try:
            while (deadline := self.start_mono + self.blocks * self._period) <= now + _EARLY_S:
                if now - deadline > self._period:
                    self.late_blocks += 1
                self._write(self._pull(self.block))
                self.blocks += 1
        except Exception as exc:  # a timer callback has nowhere to raise to: the owner hears of it
            self.faults.fatal(exc)
            return
        self._arm()

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
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._close()
