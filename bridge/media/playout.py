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
- Low-latency mode (``target_ms``, for the WebRTC downlink) keeps the queue near one frame: if the least
  it holds after a pull, over a window, stays above the target, a few samples per block are skipped by a crude
  time-stretch (<= 2 % speed-up, no clicks), and a large excess is dropped at once. Underruns become
  silence and never add delay later (nothing is ever re-buffered to "catch up").
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

log = logging.getLogger(__name__)

Key = tuple[str, int]
Overflow = Literal["drop_oldest", "drop_newest"]
EventKind = Literal["first_sample", "drained", "stopped"]

_MAX_TRACKED = 256  # items remembered for played_ms / the discard gate (oldest forgotten first)
_RAISE_GAP_S = 1.0  # low-latency mode: at most one target raise per second


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
    underruns: int = 0
    silent_pulls: int = 0


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
        self.target = None if target_ms is None else int(target_ms * SAMPLES_PER_MS)
        # Adaptive target (low-latency mode): an underrun while audio is flowing means a frame came later
        # than the queue could cover, so the target grows one step (up to adapt_max); each adapt_relax
        # seconds without one it shrinks a step back toward the configured target. Latency stays near one
        # frame on a clean network and grows only as much as the network (or a busy machine) needs.
        self.base_target = self.target
        self._adapt_step = int(adapt_step_ms * SAMPLES_PER_MS)
        self._adapt_max = int(adapt_max_ms * SAMPLES_PER_MS)
        self._adapt_relax = adapt_relax_s
        self._last_raise = -math.inf  # last raise or relax step (relaxing waits adapt_relax after it)
        self._last_bump = -math.inf  # last raise
        self._clock = clock
        self._drift_window = int(drift_window_ms * SAMPLES_PER_MS)
        self._drift_tolerance = int(drift_tolerance_ms * SAMPLES_PER_MS)
        self._max_stretch = max_stretch
        self._hard_excess = int(hard_excess_ms * SAMPLES_PER_MS)
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
        self._window_min = math.inf
        self._window_len = 0
        self._to_shave = 0

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
            if self.target is not None and not self._queued and not self._active:
                # Starting from empty: hold the first samples for the target, so the margin after every
                # pull covers the next frame's lateness from the very first frame on (a start in the
                # wrong phase would otherwise run dry 20 ms later and raise the target for the session).
                self._start_at = self._clock() + self.target / RATE
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
            if self.target is not None:
                self._relax_target(now)
            holding = not self._active and now < self._start_at and self._queued and not self._fade_remaining
            extra = self._drift_extra(n) if self.target is not None and not holding else 0
            want = n + extra
            avail = min(want, self._queued)
            if holding:
                self.counters.silent_pulls += 1  # still holding the start of a stream: not an underrun
            elif avail == 0:
                self.counters.silent_pulls += 1
                if self._active:
                    self._note_dry()
                self._active = False
                self._window_reset()
            else:
                src = out if extra == 0 else np.zeros(want, dtype=np.int16)
                self._take(src, avail, now, n, events)
                if extra:
                    got = avail
                    if got >= want:
                        out[:] = np.interp(
                            np.linspace(0.0, want - 1, n), np.arange(want), src.astype(np.float64)
                        ).astype(np.int16)
                        self._to_shave -= extra
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
            now = self._clock()
            # One stall (e.g. the busy first second of a call) often runs the queue dry several times in a
            # row: it raises the target once, not once per dry pull.
            if self.target is not None and now - self._last_bump >= _RAISE_GAP_S:
                self.target = min(self._adapt_max, self.target + self._adapt_step)
                self._last_raise = self._last_bump = now

    def _relax_target(self, now: float) -> None:
        """One step back toward the configured target after a quiet ``adapt_relax`` seconds."""
        if self.target is None or self.base_target is None or self.target <= self.base_target:
            return
        if now - self._last_raise >= self._adapt_relax:
            self.target = max(self.base_target, self.target - self._adapt_step // 2)
            self._last_raise = now

    @property
    def target_ms(self) -> float | None:
        """The current (adaptive) minimum queue depth in low-latency mode."""
        return None if self.target is None else self.target / SAMPLES_PER_MS

    def _finish_fade(self, now: float, events: list[PlayoutEvent]) -> None:
        pend = self._pending_stop
        if pend is None or self._fade_remaining:
            return
        # The fade ended in this block, at output position _fade_end_out: silent from there on.
        pend.stopped_at = now + self._fade_end_out / RATE + self.output_latency
        self._pending_stop = None
        events.append(PlayoutEvent("stopped", None, pend.stopped_at))

    def _drift_extra(self, n: int) -> int:
        """Samples to skip in this pull so that the least the queue holds after a pull returns to ``target``
        (low-latency mode)."""
        assert self.target is not None
        depth = self._queued
        if self._fade_remaining or depth == 0:
            return 0
        if depth > self.target + self._hard_excess:
            # Far too deep (a burst after a stall): jump back to the target at once.
            over = depth - self.target - n
            if over > 0:
                self.counters.drift_dropped += self._discard_head(over)
                self._window_reset()
                self._to_shave = 0
            return 0
        # The margin is what is left AFTER this pull: the cover for the next frame's lateness. (Measuring
        # the depth before the pull let the drift control shave the queue below one block, so every
        # frame that landed just after a pull was an underrun: a 10 ms gap and a raised target.)
        self._window_min = min(self._window_min, depth - n)
        self._window_len += n
        if self._window_len >= self._drift_window:
            excess = int(self._window_min) - self.target
            self._to_shave = excess if excess > self._drift_tolerance else 0
            self._window_reset()
        if self._to_shave <= 0:
            return 0
        extra = min(self._to_shave, max(1, int(n * self._max_stretch)), depth - n)
        if extra <= 0:
            return 0
        self.counters.drift_dropped += extra
        return extra

    def _window_reset(self) -> None:
        self._window_min = math.inf
        self._window_len = 0

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
            self._to_shave = 0
            self._window_reset()
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
