"""The playout buffer between the network and the speaker: where barge-in is won or lost.

The event loop ``push``es assistant audio tagged with ``(item_id, content_index)``; the sink's clock
(PortAudio callback thread, or a file sink's deadline task) ``pull``s exactly ``n`` samples per block.
``pull`` never waits: one ``threading.Lock`` guards only deque and array slicing, and a short queue
turns into silence, not a stall.

Why each piece exists (issues #3 and #4):
- ``played_ms`` counts samples actually handed to the device per item, minus what is still inside the
  device (its output latency), so ``conversation.item.truncate`` can say what the user really heard
  (PROTOCOL.md: ``audio_end_ms`` must not exceed the audio the server sent).
- ``flush(fade_ms)`` empties the queue at once: the next pull plays at most ``fade_ms`` of faded audio and
  then silence, so a barge-in is silent within one device block, with no click.
- Items that were flushed (or dropped) are gated: late chunks of the interrupted response are discarded.
- Low-latency mode (``target_ms``, for the WebRTC downlink) keeps a small margin queued after every pull;
  the margin and the drift control that holds the queue to it are :mod:`bridge.media.playout_target`.
  Underruns become silence and never add delay later (nothing is ever re-buffered to "catch up").
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from bridge.media.base import RATE, SAMPLES_PER_MS
from bridge.media.playout_target import AdaptiveTarget, DriftControl, JitterTarget

log = logging.getLogger(__name__)

Key = tuple[str, int]
Overflow = Literal["drop_oldest", "drop_newest"]
EventKind = Literal["first_sample", "drained", "stopped"]

_MAX_TRACKED = 256  # items remembered for played_ms / the discard gate (oldest forgotten first)
HELD_BIN_MS = 5  # bins of PlayoutCounters.held_ms_hist
SLACK_GUARD_MS = 5.0  # jitter mode: slack kept beyond the jitter (the receive path conceals 3 ms ahead)
HELD_BINS = 41  # 0-5, 5-10, ... 195-200, >= 200 ms


@dataclass
class ItemStats:
    """Accounting for one ``(item_id, content_index)``; times are ``time.monotonic()`` seconds."""

    pushed: int = 0
    consumed: int = 0
    first_handed: float | None = None
    """When the first sample was handed to the device (add ``output_latency`` for when it sounded)."""
    last_handed: float | None = None
    """When the latest sample of this item was handed to the device."""
    ended: bool = False


@dataclass
class FlushResult:
    """What one ``flush``/``drop_item`` removed. ``stopped_at`` is filled in by the pull that ends the fade."""

    requested_at: float
    dropped_samples: int
    fade_samples: int
    items: tuple[Key, ...]
    dropped_by_item: dict[Key, int] = field(default_factory=dict)
    stopped_at: float | None = None
    """Estimated monotonic time the device went silent (fade handed + output latency)."""

    @property
    def dropped_ms(self) -> float:
        return self.dropped_samples / SAMPLES_PER_MS


@dataclass(frozen=True)
class PlayoutEvent:
    """Sent to the listener from the sink's thread. ``at`` is the estimated audible monotonic time."""

    kind: EventKind
    key: Key | None
    at: float


@dataclass
class PlayoutCounters:
    pushed: int = 0
    pulled: int = 0
    overflow_dropped: int = 0
    gated_dropped: int = 0
    flushed: int = 0
    drift_dropped: int = 0
    stretched: int = 0  # samples added by stretching to build the margin up (jitter mode)
    underruns: int = 0
    silent_pulls: int = 0
    held_ms_hist: list[int] = field(default_factory=lambda: [0] * HELD_BINS)
    """Low-latency mode: how much was queued ahead of each pushed chunk (what it waits before it starts
    playing, to within one device block), in ``HELD_BIN_MS`` bins: the playout margin's share of the
    latency, for the lab's budget."""


class PlayoutBuffer:
    """Bounded, thread-safe queue of tagged 48 kHz mono int16 audio. See the module docstring.

    ``max_ms`` bounds the queue (60 s = 5.8 MB); ``overflow`` defaults to ``drop_newest`` in queue mode
    and ``drop_oldest`` in low-latency mode (``target_ms`` set); ``counters.overflow_dropped`` counts both.

    ``listener`` (optional) is called from the SINK's thread, outside the lock: keep it cheap and hop to
    the event loop with ``loop.call_soon_threadsafe``.
    """

    def __init__(
        self,
        *,
        max_ms: float = 60_000,
        overflow: Overflow | None = None,
        target_ms: float | None = None,
        drift_window_ms: float = 400,
        drift_tolerance_ms: float = 2,
        max_stretch: float = 0.02,
        hard_excess_ms: float = 200,
        adapt_step_ms: float = 10,
        adapt_max_ms: float = 80,
        adapt_relax_s: float = 10,
        listener: Callable[[PlayoutEvent], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.capacity = int(max_ms * SAMPLES_PER_MS)
        # Queue mode (WS: deltas arrive faster than real time) keeps what is playing and rejects the
        # excess; low-latency mode (WebRTC, real-time producer) keeps the newest audio.
        self.overflow: Overflow = overflow or ("drop_newest" if target_ms is None else "drop_oldest")
        self._clock = clock
        # Low-latency mode: the margin kept after every pull, and the drift control that holds it there.
        self._target = (
            None
            if target_ms is None
            else AdaptiveTarget(
                target_ms, step_ms=adapt_step_ms, max_ms=adapt_max_ms, relax_s=adapt_relax_s, clock=clock
            )
        )
        # Once the receive path reports arrivals (arrival()), the margin follows the measured jitter instead.
        self._jitter: JitterTarget | None = None
        self._arrival_delay: float | None = None  # the last reported packet's lateness (ms), for its push
        self._last_pull_at: float | None = None
        self._last_pull_n = 0
        self._drift = DriftControl(
            window_ms=drift_window_ms,
            tolerance_ms=drift_tolerance_ms,
            max_stretch=max_stretch,
            hard_excess_ms=hard_excess_ms,
        )
        self.listener = listener
        self.counters = PlayoutCounters()
        self.output_latency = 0.0
        self.last_flush: FlushResult | None = None

        self._lock = threading.Lock()
        self._queue: deque[tuple[Key, np.ndarray]] = deque()
        self._head_offset = 0
        self._queued = 0
        self._stats: OrderedDict[Key, ItemStats] = OrderedDict()
        self._gate: OrderedDict[str, None] = OrderedDict()
        self._fade_remaining = 0
        self._fade_end_out = 0
        self._pending_stop: FlushResult | None = None
        self._active = False
        self._start_at = -math.inf  # low-latency mode: a stream starting from empty plays from here on
        self._last_key: Key | None = None

    # ------------------------------------------------------------------ producer side (event loop)

    def push(self, pcm48: np.ndarray, item_id: str, content_index: int = 0) -> int:
        """Queue audio for ``(item_id, content_index)``; returns how many samples were accepted."""
        chunk = np.ascontiguousarray(pcm48, dtype=np.int16).reshape(-1)
        n = len(chunk)
        if n == 0:
            return 0
        key = (item_id, content_index)
        with self._lock:
            if item_id in self._gate:
                self.counters.gated_dropped += n
                return 0
            free = self.capacity - self._queued
            if n > free and self.overflow == "drop_newest":
                self.counters.overflow_dropped += n - free
                chunk = chunk[:free]
                n = free
                if n == 0:
                    return 0
            self._stats_for(key).pushed += n
            if self._target is not None and not self._queued and not self._active:
                # Starting from empty: hold the first samples for the target, so the margin after every
                # pull covers the next frame's lateness from the very first frame on (a start in the
                # wrong phase would otherwise run dry 20 ms later and raise the target for the session).
                self._start_at = self._clock() + self._margin() / RATE
            if self._target is not None:
                held = min(HELD_BINS - 1, int(self._queued / SAMPLES_PER_MS / HELD_BIN_MS))
                self.counters.held_ms_hist[held] += 1
                delay, self._arrival_delay = self._arrival_delay, None
                if delay is not None and self._active and self._last_pull_at is not None:
                    # how long before the device would have run short this audio came, had it not been late
                    slack = self._until_dry(self._clock()) * RATE + delay * SAMPLES_PER_MS
                    self._drift.slack(slack)
            self._queue.append((key, chunk.copy()))
            self._queued += n
            self.counters.pushed += n
            if self._queued > self.capacity:  # drop_oldest
                over = self._queued - self.capacity
                self._discard_head(over)
                self.counters.overflow_dropped += over
            return n

    def end_item(self, item_id: str, content_index: int = 0) -> None:
        """Mark that no more audio will come for this key (running dry after it is not an underrun)."""
        with self._lock:
            self._stats_for((item_id, content_index)).ended = True

    def flush(self, fade_ms: float = 5, *, discard: bool = True) -> FlushResult:
        """Drop everything queued; the next pull plays at most ``fade_ms`` of faded audio, then silence.

        With ``discard`` the flushed items (and the one playing) are gated: later pushes are dropped.
        """
        return self._cut(None, fade_ms, discard)

    def drop_item(self, item_id: str, fade_ms: float = 5) -> FlushResult:
        """Drop one item's queued audio (fading it if it is playing) and discard its later pushes."""
        return self._cut(item_id, fade_ms, True)

    def gate(self, item_id: str) -> None:
        """Discard every future push for ``item_id`` (e.g. a cancelled response's item)."""
        with self._lock:
            self._gate_add(item_id)

    def ungate(self, item_id: str) -> None:
        with self._lock:
            self._gate.pop(item_id, None)

    def set_output_latency(self, seconds: float) -> None:
        """The sink's reported output latency (PortAudio ``stream.latency``); 0 for files."""
        self.output_latency = max(0.0, float(seconds))

    # ------------------------------------------------------------------ the receive path's view (event loop)

    def arrival(self, media_s: float, at: float | None = None) -> None:
        """A packet of the low-latency stream arrived; ``media_s`` is its media time (RTP timestamp / rate).
        From the first call on, the margin follows the arrival jitter (:class:`JitterTarget`) and dry
        pulls no longer raise it: the receive path conceals what is late when the device needs it."""
        if self._target is None:
            return
        with self._lock:
            if self._jitter is None:
                self._jitter = JitterTarget(clock=self._clock)
            self._jitter.observe(media_s, at)
            self._arrival_delay = self._jitter.delay_ms

    def new_stream(self) -> None:
        """Arrivals from now on are of another stream (a new connection's): its media clock starts afresh,
        so the jitter measured on the old one says nothing about it (kept, every packet of the new stream
        looked late by the old one's media time: the margin sat at its maximum after every reconnect)."""
        with self._lock:
            if self._jitter is not None:
                self._jitter = JitterTarget(clock=self._clock)
                self._arrival_delay = 0.0

    def ms_until_dry(self) -> float | None:
        """How long (ms) until a device pull will find less than it takes, while a low-latency stream is
        playing; None when nothing is playing (idle, holding a start, or fading out a flush)."""
        with self._lock:
            if self._target is None or not self._active or self._fade_remaining or self._last_pull_at is None:
                return None
            return self._until_dry(self._clock()) * 1000.0

    def _until_dry(self, now: float) -> float:
        """Seconds until the first device pull that will find fewer samples than it takes (lock held)."""
        assert self._last_pull_at is not None
        n = max(1, self._last_pull_n)
        pulls_left = self._queued // n + 1  # the pull that finds < n samples
        return self._last_pull_at + pulls_left * n / RATE - now

    @property
    def jitter_ms(self) -> float | None:
        """The margin the measured arrival jitter asks for (None before the receive path reports)."""
        return None if self._jitter is None or not self._jitter.ready else self._jitter.ms

    # ------------------------------------------------------------------ queries (any thread)

    def played_ms(self, item_id: str, content_index: int = 0, now: float | None = None) -> float:
        """Milliseconds of this item the listener has heard by ``now``: samples handed to the device
        minus those still inside it (output latency not yet elapsed since the last hand-off)."""
        with self._lock:
            st = self._stats.get((item_id, content_index))
            if st is None or st.last_handed is None:
                return 0.0
            now = self._clock() if now is None else now
            in_flight = max(0.0, st.last_handed + self.output_latency - now)
            return max(0.0, st.consumed / SAMPLES_PER_MS - in_flight * 1000.0)

    def handed_ms(self, item_id: str, content_index: int = 0) -> float:
        """Milliseconds of this item handed to the device so far (no latency correction)."""
        with self._lock:
            st = self._stats.get((item_id, content_index))
            return 0.0 if st is None else st.consumed / SAMPLES_PER_MS

    def received_ms(self, item_id: str, content_index: int = 0) -> float:
        """Milliseconds of this item accepted by ``push`` (not counting gated or rejected audio)."""
        with self._lock:
            st = self._stats.get((item_id, content_index))
            return 0.0 if st is None else st.pushed / SAMPLES_PER_MS

    def stats(self, item_id: str, content_index: int = 0) -> ItemStats | None:
        with self._lock:
            st = self._stats.get((item_id, content_index))
            return None if st is None else ItemStats(**vars(st))

    @property
    def queued_ms(self) -> float:
        return self._queued / SAMPLES_PER_MS

    @property
    def queued_samples(self) -> int:
        return self._queued

    def is_gated(self, item_id: str) -> bool:
        return item_id in self._gate

    # ------------------------------------------------------------------ consumer side (sink clock)

    def pull(self, n: int) -> np.ndarray:
        """Exactly ``n`` samples for the device, now. Never blocks beyond a short slicing lock."""
        now = self._clock()
        out = np.zeros(n, dtype=np.int16)
        events: list[PlayoutEvent] = []
        with self._lock:
            self.counters.pulled += n
            self._last_pull_at, self._last_pull_n = now, n
            if self._target is not None:
                self._target.relax(now)
            holding = not self._active and now < self._start_at and self._queued and not self._fade_remaining
            extra = self._drift_extra(n) if self._target is not None and not holding else 0
            want = n + extra
            avail = min(want, self._queued)
            if holding:
                self.counters.silent_pulls += 1  # still holding the start of a stream: not an underrun
            elif avail == 0:
                self.counters.silent_pulls += 1
                if self._active:
                    self._note_dry()
                self._active = False
                self._drift.reset_window()
            else:
                src = out if extra == 0 else np.zeros(want, dtype=np.int16)
                self._take(src, avail, now, n, events)
                if extra:
                    got = avail
                    if got >= want:
                        out[:] = np.interp(
                            np.linspace(0.0, want - 1, n), np.arange(want), src.astype(np.float64)
                        ).astype(np.int16)
                        self._drift.shaved(extra)
                    else:
                        out[: min(n, got)] = src[: min(n, got)]
                if avail < want:
                    self._note_dry()
                    self._active = False
                else:
                    self._active = True
            self._finish_fade(now, events)
        if events and self.listener is not None:
            for ev in events:
                self.listener(ev)
        return out

    # ------------------------------------------------------------------ internals (lock held)

    def _stats_for(self, key: Key) -> ItemStats:
        st = self._stats.get(key)
        if st is None:
            st = self._stats[key] = ItemStats()
            while len(self._stats) > _MAX_TRACKED:
                self._stats.popitem(last=False)
        return st

    def _gate_add(self, item_id: str) -> None:
        self._gate[item_id] = None
        self._gate.move_to_end(item_id)
        while len(self._gate) > _MAX_TRACKED:
            self._gate.popitem(last=False)

    def _take(self, dst: np.ndarray, count: int, now: float, n_out: int, events: list[PlayoutEvent]) -> None:
        """Move ``count`` queued samples into ``dst`` and account them to their items."""
        pos = 0
        scale = n_out / len(dst)  # output position of an input sample when time-stretching
        while pos < count:
            key, arr = self._queue[0]
            take = min(count - pos, len(arr) - self._head_offset)
            dst[pos : pos + take] = arr[self._head_offset : self._head_offset + take]
            st = self._stats_for(key)
            if st.first_handed is None:
                st.first_handed = now + pos * scale / RATE
                events.append(PlayoutEvent("first_sample", key, st.first_handed + self.output_latency))
            st.consumed += take
            st.last_handed = now + (pos + take) * scale / RATE
            self._last_key = key
            pos += take
            self._head_offset += take
            if self._head_offset == len(arr):
                self._queue.popleft()
                self._head_offset = 0
                if st.ended:
                    events.append(PlayoutEvent("drained", key, st.last_handed + self.output_latency))
        self._queued -= count
        if self._fade_remaining:
            ended = min(self._fade_remaining, count)
            self._fade_end_out = math.ceil(ended * scale)
            self._fade_remaining -= ended

    def _discard_head(self, count: int) -> int:
        dropped = 0
        while dropped < count and self._queue:
            _key, arr = self._queue[0]
            take = min(count - dropped, len(arr) - self._head_offset)
            self._head_offset += take
            dropped += take
            if self._head_offset == len(arr):
                self._queue.popleft()
                self._head_offset = 0
        self._queued -= dropped
        return dropped

    def _note_dry(self) -> None:
        if self._pending_stop is not None or self._fade_remaining:
            return
        last = self._stats.get(self._last_key) if self._last_key else None
        if last is None or not last.ended:
            self.counters.underruns += 1
            if self._target is not None and self._jitter is None:
                self._target.on_underrun()

    def _margin(self) -> int:
        """The margin (samples): once the receive path reports arrivals, the slack each packet needs before
        the device would run short, i.e. the measured jitter plus the receive path's guard; else the
        stepped margin left after each pull."""
        assert self._target is not None
        if self._jitter is not None:
            jitter = self._jitter.ms if self._jitter.ready else 0.0
            return int((jitter + SLACK_GUARD_MS) * SAMPLES_PER_MS)
        return self._target.value

    @property
    def target_ms(self) -> float | None:
        """The current (adaptive) minimum queue depth in low-latency mode."""
        return None if self._target is None else self._margin() / SAMPLES_PER_MS

    def _finish_fade(self, now: float, events: list[PlayoutEvent]) -> None:
        pend = self._pending_stop
        if pend is None or self._fade_remaining:
            return
        # The fade ended in this block, at output position _fade_end_out: silent from there on.
        pend.stopped_at = now + self._fade_end_out / RATE + self.output_latency
        self._pending_stop = None
        events.append(PlayoutEvent("stopped", None, pend.stopped_at))

    def _drift_extra(self, n: int) -> int:
        """Samples to squeeze into this pull (time-stretch) so the margin returns to the target; a far too
        deep queue is cut back at once (low-latency mode)."""
        assert self._target is not None
        if self._fade_remaining:
            return 0
        plan = self._drift.plan(self._queued, n, self._margin(), slack=self._jitter is not None)
        if plan.discard:
            self.counters.drift_dropped += self._discard_head(plan.discard)
        if plan.extra > 0:
            self.counters.drift_dropped += plan.extra
        elif plan.extra < 0:
            self.counters.stretched -= plan.extra
        return plan.extra

    def _cut(self, item_id: str | None, fade_ms: float, discard: bool) -> FlushResult:
        now = self._clock()
        fade_n = max(0, int(fade_ms * SAMPLES_PER_MS))
        with self._lock:
            match = (lambda k: True) if item_id is None else (lambda k: k[0] == item_id)
            kept: deque[tuple[Key, np.ndarray]] = deque()
            affected: dict[Key, int] = {}
            fade_parts: list[tuple[Key, np.ndarray]] = []
            fade_left = fade_n if (self._queue and match(self._queue[0][0])) else 0
            leading = True
            first = True
            for key, arr in self._queue:
                if first:
                    arr = arr[self._head_offset :]
                    first = False
                if not match(key):
                    leading = False
                    kept.append((key, arr))
                    continue
                take = min(fade_left, len(arr)) if leading else 0
                if take:
                    fade_parts.append((key, arr[:take]))
                    fade_left -= take
                affected[key] = affected.get(key, 0) + len(arr) - take
            fade_total = sum(len(a) for _k, a in fade_parts)
            if fade_total:
                ramp = np.linspace(1.0, 0.0, fade_total + 1, endpoint=True)[1:]
                pos = 0
                faded: list[tuple[Key, np.ndarray]] = []
                for key, part in fade_parts:
                    f = (part.astype(np.float64) * ramp[pos : pos + len(part)]).astype(np.int16)
                    faded.append((key, f))
                    pos += len(part)
                kept.extendleft(reversed(faded))
            dropped = sum(affected.values())
            self._queue = kept
            self._head_offset = 0
            self._queued = sum(len(a) for _k, a in kept)
            self.counters.flushed += dropped
            if item_id is None and self._last_key is not None:
                affected.setdefault(self._last_key, 0)
            if discard:
                for key in affected:
                    self._gate_add(key[0])
                if item_id is not None:
                    self._gate_add(item_id)
            result = FlushResult(
                requested_at=now,
                dropped_samples=dropped,
                fade_samples=fade_total,
                items=tuple(affected),
                dropped_by_item={k: v for k, v in affected.items() if v},
            )
            self._fade_remaining = fade_total
            self._drift.reset()
            if fade_total:
                self._pending_stop = result
            else:
                # Nothing left to fade: silent from the next pull, after what the device still holds.
                last = self._stats.get(self._last_key) if self._last_key else None
                handed = last.last_handed if last and last.last_handed else now
                result.stopped_at = max(now, handed + self.output_latency)
                self._pending_stop = None
            self.last_flush = result
        log.debug("flush item=%s dropped=%d fade=%d", item_id, dropped, fade_total)
        return result
