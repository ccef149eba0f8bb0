"""How much audio the low-latency playout keeps queued, and how it gets back there (issue #14 item 9).

:class:`bridge.media.playout.PlayoutBuffer` moves samples; the two policies that decide its latency live
here, with an injected clock, so they can be tested (and replaced) on their own:

- :class:`AdaptiveTarget`: the margin the queue keeps after every device pull. An underrun while audio
  is flowing means a frame came later than the margin could cover, so the target grows one step (at
  most one step per ``raise_gap_s``, up to ``max``); each ``relax_s`` seconds without a raise it shrinks
  half a step back toward the configured base.
- :class:`DriftControl`: keeps the least the queue holds after a pull, over a window, near the target.
  An excess above a tolerance is shaved a few samples per pull (a crude time-stretch of at most
  ``max_stretch``); a large excess (a burst after a stall) is dropped at once.

- :class:`JitterTarget`: the margin a stream needs for its arrival jitter, as libwebrtc's NetEq computes
  its target delay. Once the receive path reports arrivals (``PlayoutBuffer.arrival``) it replaces the
  underrun steps: a late frame is concealed when the device needs it, and the margin follows the
  measured jitter instead of stepping up by 10 ms on every dry pull.

Margins work in samples at 48 kHz; nothing here touches audio. The buffer calls them with its lock held.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from bridge.media.base import SAMPLES_PER_MS

Clock = Callable[[], float]


class AdaptiveTarget:
    """The low-latency margin (samples): raised by underruns, relaxed after quiet time."""

    def __init__(
        self,
        base_ms: float,
        *,
        step_ms: float = 10,
        max_ms: float = 80,
        relax_s: float = 10,
        raise_gap_s: float = 1.0,
        clock: Clock = time.monotonic,
    ) -> None:
        self.base = int(base_ms * SAMPLES_PER_MS)
        self.value = self.base
        self._step = int(step_ms * SAMPLES_PER_MS)
        self._max = int(max_ms * SAMPLES_PER_MS)
        self._relax = relax_s
        self._raise_gap = raise_gap_s
        self._clock = clock
        self._last_change = -math.inf  # last raise or relax step (relaxing waits relax_s after it)
        self._last_raise = -math.inf

    @property
    def ms(self) -> float:
        return self.value / SAMPLES_PER_MS

    def on_underrun(self) -> None:
        """The queue ran dry while a stream was playing. One stall (e.g. the busy first second of a call)
        often runs it dry several times in a row: it raises the target once, not once per dry pull."""
        now = self._clock()
        if now - self._last_raise >= self._raise_gap:
            self.value = min(self._max, self.value + self._step)
            self._last_change = self._last_raise = now

    def relax(self, now: float | None = None) -> None:
        """One half step back toward the base after a quiet ``relax_s`` (call once per pull)."""
        if self.value <= self.base:
            return
        now = self._clock() if now is None else now
        if now - self._last_change >= self._relax:
            self.value = max(self.base, self.value - self._step // 2)
            self._last_change = now


@dataclass(frozen=True)
class Shave:
    """What :meth:`DriftControl.plan` decided for one pull."""

    extra: int = 0  # samples to take on top of the pull's n and squeeze into it; < 0: stretch fewer over n
    discard: int = 0  # samples to drop from the head of the queue at once


class DriftControl:
    """Keeps the queue's least margin, over ``window_ms``, within ``tolerance_ms`` of the target.

    Two measures of the margin. By default, the least depth left after a pull (the old policy). In
    ``slack`` mode (once the receive path reports arrivals), the least *slack* of the packets that arrived
    in the window: how long before the device would have found the queue short each packet's audio came,
    plus how late that packet was against the stream's fastest (:meth:`slack`). That is what the arrival
    jitter has to fit into, whatever the phase of the packets against the device's blocks; a slack below
    the target is built up by stretching fewer samples over a pull (NetEq's preemptive expand), one above
    it shaved (NetEq's accelerate).
    """

    def __init__(
        self,
        *,
        window_ms: float = 400,
        tolerance_ms: float = 2,
        max_stretch: float = 0.02,
        hard_excess_ms: float = 200,
    ) -> None:
        self._window = int(window_ms * SAMPLES_PER_MS)
        self._tolerance = int(tolerance_ms * SAMPLES_PER_MS)
        self._max_stretch = max_stretch
        self._hard_excess = int(hard_excess_ms * SAMPLES_PER_MS)
        self._window_min = math.inf
        self._slack_min = math.inf
        self._window_len = 0
        self._to_shave = 0

    def slack(self, samples: float) -> None:
        """Slack mode: a packet's audio arrived ``samples`` before the queue would have run short (lateness
        against the stream's fastest packet added back)."""
        self._slack_min = min(self._slack_min, samples)

    def plan(self, depth: int, n: int, target: int, *, slack: bool = False) -> Shave:
        """For a pull of ``n`` samples from a queue ``depth`` deep, with the margin ``target``."""
        if depth == 0:
            return Shave()
        if depth > target + self._hard_excess:
            # Far too deep (a burst after a stall): jump back to the target at once.
            over = depth - target - n
            if over > 0:
                self.reset()
                return Shave(discard=over)
            return Shave()
        # The margin is what is left AFTER this pull: the cover for the next frame's lateness. (Measuring
        # the depth before the pull let the drift control shave the queue below one block, so every
        # frame that landed just after a pull was an underrun: a 10 ms gap and a raised target.)
        self._window_min = min(self._window_min, depth - n)
        self._window_len += n
        if self._window_len >= self._window:
            if not slack:
                excess = int(self._window_min) - target
                self._to_shave = excess if excess > self._tolerance else 0
            elif self._slack_min != math.inf:
                # A packet's slack moves in whole device blocks (it is the time to the pull that would find
                # the queue short), so the queue can only put it in [target, target + one block): shave only
                # what keeps it there, build it up when it is below.
                excess = int(self._slack_min) - target
                if excess < -self._tolerance:
                    self._to_shave = excess  # negative: samples to add
                else:
                    self._to_shave = excess - n if excess > n + self._tolerance else 0
            self._window_reset()
        if self._to_shave < 0:
            step = min(-self._to_shave, max(1, int(n * self._max_stretch)), n - 1)
            return Shave(extra=-step) if depth >= n - step else Shave()
        if self._to_shave == 0:
            return Shave()
        extra = min(self._to_shave, max(1, int(n * self._max_stretch)), depth - n)
        return Shave(extra=extra) if extra > 0 else Shave()

    def shaved(self, extra: int) -> None:
        """``extra`` samples were really squeezed into a pull (negative: stretched)."""
        self._to_shave -= extra

    def reset(self) -> None:
        """Forget the window and any planned shave (after a flush or a jump)."""
        self._to_shave = 0
        self._window_reset()

    def reset_window(self) -> None:
        """Start a new window, keeping a shave already planned (after a dry pull)."""
        self._window_reset()

    def _window_reset(self) -> None:
        self._window_min = math.inf
        self._slack_min = math.inf
        self._window_len = 0


class JitterTarget:
    """A margin that follows the stream's arrival jitter, the way libwebrtc's NetEq sets its target delay.

    NetEq (``modules/audio_coding/neteq``: ``packet_arrival_history.cc``, ``underrun_optimizer.cc``,
    ``delay_manager.h``): each packet's *relative* arrival delay is how much later it arrived than the
    fastest packet of the last ``window_s`` of media predicts (arrival minus media time, against the
    minimum of that difference); every ``interval_s`` the largest relative delay of the interval goes into
    a histogram whose old mass fades by ``forget`` per update (faster at the start: ``start_weight``), and
    the target is the ``quantile`` of that histogram. Defaults are NetEq's (0.95, 0.983, 2, 500 ms,
    2 s). NetEq's buckets are 20 ms wide, so its target is at least one packet; here they are ``bucket_ms``
    (1 ms), because this margin is what stays queued *after* each device pull, on top of the frame being
    played, and on a clean network a few ms cover the loop's own scheduling. The first ``settle_s`` of a
    stream are not counted: both ends are still busy setting the call up (DTLS, the data channel, the
    session's first events), and NetEq's start weight would turn one such stall into the target.
    """

    def __init__(
        self,
        *,
        quantile: float = 0.95,
        forget: float = 0.983,
        start_weight: float = 2.0,
        interval_s: float = 0.5,
        window_s: float = 2.0,
        bucket_ms: float = 1.0,
        max_ms: float = 250.0,
        settle_s: float = 1.0,
        clock: Clock = time.monotonic,
    ) -> None:
        self._settle = settle_s
        self._first: float | None = None
        self._quantile = quantile
        self._forget = forget
        self._start_weight = start_weight
        self._interval = interval_s
        self._window = window_s
        self._bucket = bucket_ms
        self._hist = [0.0] * (int(max_ms / bucket_ms) + 1)
        self._adds = 0
        self._clock = clock
        self._mins: deque[tuple[float, float]] = deque()  # (media time, arrival - media time), increasing
        self._interval_start: float | None = None
        self._interval_max = 0.0
        self.delay_ms = 0.0  # the last packet's relative delay
        self.updates = 0
        self._value_ms: float | None = None

    @property
    def ready(self) -> bool:
        """True once the histogram has had its first update."""
        return self._value_ms is not None

    @property
    def ms(self) -> float:
        return 0.0 if self._value_ms is None else self._value_ms

    def observe(self, media_s: float, arrival: float | None = None) -> None:
        """A packet whose first sample is at ``media_s`` of the stream arrived (now, by default)."""
        now = self._clock() if arrival is None else arrival
        if self._first is None:
            self._first = now
        if now - self._first < self._settle:
            return  # the call's first second carries set-up work on both ends, not the network's jitter
        offset = now - media_s
        while self._mins and self._mins[-1][1] >= offset:
            self._mins.pop()
        self._mins.append((media_s, offset))
        while self._mins[0][0] < media_s - self._window:
            self._mins.popleft()
        self.delay_ms = (offset - self._mins[0][1]) * 1000.0
        if self._interval_start is None:
            self._interval_start = now
        self._interval_max = max(self._interval_max, self.delay_ms)
        if now - self._interval_start >= self._interval:
            self._add(self._interval_max)
            self._interval_start = now
            self._interval_max = 0.0

    def _add(self, delay_ms: float) -> None:
        self._adds += 1
        self.updates += 1
        forget = min(self._forget, max(0.0, 1.0 - self._start_weight / (self._adds + 1)))
        for i in range(len(self._hist)):
            self._hist[i] *= forget
        index = min(len(self._hist) - 1, int(delay_ms / self._bucket))
        self._hist[index] += 1.0 - forget
        total = sum(self._hist)
        acc = 0.0
        for i, mass in enumerate(self._hist):
            acc += mass
            if acc >= self._quantile * total:
                self._value_ms = (i + 1) * self._bucket
                return
