"""The receive path's packet-ordering and hole policy: pure, no I/O, driven by an explicit clock.

Why not aiortc's ``JitterBuffer(capacity=16, prefetch=4)``: it holds 4 packets before releasing the
first one (80 ms on a clean network) and, after one lost packet, waits for the hole to be filled until the
buffer overflows, then stays ~14 packets deep for the rest of the call (aiortc issue #543;
ENVIRONMENT.md "aiortc"). This window instead:

- releases a packet the moment it is the next one in sequence (zero added delay when in order);
- when a packet is missing, holds the packets behind the hole for at most ``wait`` seconds (measured
  from the arrival of the oldest held packet), then gives up on the hole: the missing frames are
  reported for concealment and the held packets released, so the delay returns to zero right after;
- drops duplicates and packets that arrive after their slot was concealed ("late"), counting both;
- adapts ``wait``: it starts at one frame, grows to cover reorder depth actually seen (holes that were
  filled late, packets that came after their slot was concealed) and RFC 3550 interarrival jitter,
  and decays back towards the floor while the network is clean;
- bounds everything: at most ``max_pending`` packets held, at most ``max_conceal_frames`` concealed per
  hole (longer gaps are skipped, not synthesised), big sequence jumps resynchronise instead of
  concealing seconds of audio.

Playout timing (absorbing jitter against a device clock) is NOT done here: that is the job of the
consumer's playout buffer, which already runs on the device clock. Doing it twice is what makes
stacked WebRTC receivers slow.

When the consumer's playout is about to run dry and the next packet has not come, the receiver asks for
:meth:`ReorderWindow.cover`: one frame of concealment *now*, as NetEq expands when its next packet is
missing at playout time. The covered slot stays open: if its packet then arrives it is played after the
concealment (the stream slips by a frame, as after NetEq's expand; the playout's drift control takes
the extra back), and if a later packet arrives first the slot was lost and is not concealed twice.
:data:`FOLLOW_PLAYOUT` is the tuning for that mode: with the playout deciding when a missing frame is
needed, a hole behind which later packets already wait is only worth waiting for when this stream has
been seen to reorder (the learnt depth); jitter alone delays packets but never reorders them.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

SEQ_MOD = 1 << 16
TS_MOD = 1 << 32


@dataclass(frozen=True, slots=True)
class ReorderConfig:
    """Tuning of :class:`ReorderWindow`; times in seconds."""

    frame_s: float = 0.020  # nominal packet duration, used before any is measured
    min_wait: float = 0.020  # floor of the hole wait (start value): about one frame
    max_wait: float = 0.120  # ceiling of the hole wait
    jitter_factor: float = 3.0  # wait >= jitter_factor * RFC 3550 jitter
    margin: float = 0.005  # added on top of an observed late/filled-hole lateness
    decay_half_life: float = 5.0  # how fast the learnt reorder depth is forgotten
    max_pending: int = 16  # packets held behind holes
    max_conceal_frames: int = 5  # frames concealed per hole; the rest of a long gap is skipped
    resync_jump: int = 250  # |sequence jump| (packets) treated as a stream restart, not loss
    history: int = 128  # remembered emitted/concealed sequence numbers (dup vs late detection)
    default_frame_samples: int = 960  # 20 ms at 48 kHz
    max_cover_frames: int = 3  # frames concealed in a row for a playout about to run dry, then silence


FOLLOW_PLAYOUT = ReorderConfig(min_wait=0.0, jitter_factor=0.0)
"""A window whose consumer's playout says when a missing frame is needed (``AudioReceiver.follow``)."""


@dataclass(frozen=True, slots=True)
class Packet:
    """One RTP packet as the window sees it."""

    seq: int  # 16-bit RTP sequence number
    timestamp: int  # 32-bit RTP timestamp
    payload: bytes
    arrival: float  # clock() when it arrived


@dataclass(frozen=True, slots=True)
class Slot:
    """One released unit, in order: a packet to decode, or ``frames`` missing packets to conceal.

    ``samples`` is the duration to conceal (concealed slots), ``next_packet`` the packet right after a
    concealed gap if it is already here (its in-band FEC can recover the last missing frame), and
    ``ready_at`` the clock time the slot became releasable (for the added-delay measurement).
    ``covered``: concealment asked for by the playout (:meth:`ReorderWindow.cover`), not a given-up hole.
    """

    packet: Packet | None
    frames: int = 1
    samples: int = 0
    next_packet: Packet | None = None
    ready_at: float = 0.0
    covered: bool = False


@dataclass(slots=True)
class ReorderStats:
    received: int = 0  # packets pushed
    released: int = 0  # packets released for decoding
    duplicates: int = 0
    late_dropped: int = 0  # arrived after their slot was concealed or skipped
    reordered: int = 0  # arrived behind a newer packet but still in time
    lost: int = 0  # slots given up on (concealed + skipped)
    concealed: int = 0  # frames reported for concealment
    skipped: int = 0  # frames of long gaps not concealed
    overflows: int = 0  # holes given up early because max_pending packets were held
    resyncs: int = 0  # sequence jumps treated as a stream restart
    wait_ms: float = 0.0  # current hole wait
    jitter_ms: float = 0.0  # RFC 3550 interarrival jitter estimate
    max_wait_ms: float = 0.0  # largest hole wait used so far
    covered: int = 0  # frames concealed because the playout needed them before their packet came
    covered_late: int = 0  # ... whose packet then came and was played after the concealment (a slip)
    covered_lost: int = 0  # ... whose packet never came (the concealment stood for a lost frame)


class ReorderWindow:
    """Orders RTP packets, drops duplicates, gives up on holes after an adaptive wait.

    Drive it with :meth:`push` for every packet and :meth:`poll` when :attr:`deadline` passes; both
    return the :class:`Slot` list that became releasable, in order.
    """

    def __init__(self, config: ReorderConfig | None = None, *, clock_rate: int = 48_000) -> None:
        self.config = config or ReorderConfig()
        self.clock_rate = clock_rate
        self.stats = ReorderStats()
        self._next: int | None = None  # extended seq of the next slot to release
        self._highest: int | None = None  # highest extended seq seen
        self._pending: dict[int, Packet] = {}
        self._done: deque[int] = deque(maxlen=self.config.history)  # released, in order
        self._done_set: set[int] = set()
        self._gave_up: dict[int, float] = {}  # extended seq -> clock time it was concealed/skipped
        self._gave_up_order: deque[int] = deque()
        self._frame_samples = self.config.default_frame_samples
        self._last_released_ts: int | None = None
        self._last_released_ext: int | None = None
        self._learnt = 0.0  # reorder depth learnt from the stream (seconds), decays
        self._learnt_at = 0.0
        self._jitter = 0.0  # seconds, RFC 3550 6.4.1 estimator
        self._transit: float | None = None
        self._covered = 0  # slots from self._next on already concealed for the playout
        self._update_stats_wait(self.config.min_wait)

    # ---- public API -------------------------------------------------------------------------------

    @property
    def wait(self) -> float:
        """Current hole wait in seconds (without decay applied since the last event)."""
        c = self.config
        return min(c.max_wait, max(c.min_wait, self._learnt, c.jitter_factor * self._jitter))

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def deadline(self) -> float | None:
        """Clock time at which :meth:`poll` will give up on the current hole (None: no hole)."""
        if not self._pending:
            return None
        return min(p.arrival for p in self._pending.values()) + self.wait

    def push(self, packet: Packet) -> list[Slot]:
        """Add one packet; returns the slots that became releasable."""
        now = packet.arrival
        st = self.stats
        st.received += 1
        self._decay(now)
        ext = self._extend(packet.seq)
        self._update_jitter(packet)
        if self._next is None:
            self._next = ext
            self._highest = ext
        out: list[Slot] = []
        assert self._highest is not None
        if abs(ext - self._next) > self.config.resync_jump:
            out.extend(self._resync(ext))
        if ext < self._next or ext in self._done_set:
            if ext in self._gave_up:
                st.late_dropped += 1
                lateness = now - self._gave_up[ext]
                self._learn(now, self.wait + lateness + self.config.margin)
            else:
                st.duplicates += 1
            return out
        if ext in self._pending:
            st.duplicates += 1
            return out
        if ext < self._highest:
            st.reordered += 1
            if ext == self._next and self._pending:
                # A hole was filled late: learn how long it stayed open.
                opened = min(p.arrival for p in self._pending.values())
                self._learn(now, now - opened + self.config.margin)
        self._highest = max(self._highest, ext)
        self._pending[ext] = packet
        out.extend(self._drain(now))
        return out

    def poll(self, now: float) -> list[Slot]:
        """Release what the clock allows (call when :attr:`deadline` has passed)."""
        self._decay(now)
        return self._drain(now)

    def flush(self, now: float) -> list[Slot]:
        """Give up on every hole now and release everything held (end of stream)."""
        out: list[Slot] = []
        while self._pending:
            out.extend(self._drain(now, force=True))
        return out

    def cover(self, now: float) -> list[Slot]:
        """The playout needs the next frame now. A hole with later packets waiting is given up on (the
        last missing frame comes from the next packet's FEC); with nothing here at all, one frame of
        concealment goes out for the open slot (at most ``max_cover_frames`` in a row)."""
        if self._pending:
            out = self._give_up(min(self._pending), now)
            out.extend(self._drain(now))
            return out
        slot = self._next_open()
        if slot is None or self._covered >= self.config.max_cover_frames:
            return []
        self._covered += 1
        self.stats.covered += 1
        return [Slot(packet=None, frames=1, samples=self._frame_samples, ready_at=now, covered=True)]

    @property
    def coverable(self) -> bool:
        """Whether :meth:`cover` would release anything now."""
        if self._pending:
            return True
        return self._next is not None and self._covered < self.config.max_cover_frames

    def _next_open(self) -> int | None:
        """The slot the next frame would come from (None before the first packet)."""
        if self._next is None:
            return None
        return self._next + self._covered

    # ---- internals --------------------------------------------------------------------------------

    def _extend(self, seq: int) -> int:
        """16-bit sequence number -> extended (monotonic across wraparound) number."""
        ref = self._highest if self._highest is not None else None
        if ref is None:
            return seq
        delta = (seq - ref) % SEQ_MOD
        if delta >= SEQ_MOD // 2:
            delta -= SEQ_MOD
        return ref + delta

    def _drain(self, now: float, force: bool = False) -> list[Slot]:
        out: list[Slot] = []
        c = self.config
        assert self._next is not None or not self._pending
        while self._pending:
            assert self._next is not None
            pkt = self._pending.pop(self._next, None)
            if pkt is not None:
                out.append(self._release(pkt, now))
                continue
            # Hole at self._next: wait for it unless the oldest held packet has waited long enough.
            oldest = min(p.arrival for p in self._pending.values())
            overflow = len(self._pending) >= c.max_pending
            if not force and not overflow and now < oldest + self.wait:
                break
            if overflow and not force:
                self.stats.overflows += 1
            first_after = min(self._pending)
            out.extend(self._give_up(first_after, now))
        return out

    def _release(self, pkt: Packet, now: float) -> Slot:
        assert self._next is not None
        ext = self._next
        if self._last_released_ts is not None and self._last_released_ext == ext - 1:
            # Learn the packet duration from two consecutive real packets (never across a gap).
            d = (pkt.timestamp - self._last_released_ts) % TS_MOD
            if 0 < d <= self.clock_rate // 10:  # plausible packet duration (<= 100 ms)
                self._frame_samples = d
        self._last_released_ts = pkt.timestamp
        self._last_released_ext = ext
        self._mark_done(ext)
        self._next = ext + 1
        self.stats.released += 1
        if self._covered:  # it was concealed for the playout already: played late, after the concealment
            self._covered -= 1
            self.stats.covered_late += 1
        return Slot(packet=pkt, ready_at=now)

    def _give_up(self, first_after: int, now: float) -> list[Slot]:
        """Conceal/skip every slot from self._next up to (excluding) ``first_after``."""
        assert self._next is not None
        c = self.config
        gap = first_after - self._next
        for ext in range(self._next, first_after):
            self._gave_up[ext] = now
            self._gave_up_order.append(ext)
            self._mark_done(ext)
        while len(self._gave_up_order) > c.history:
            self._gave_up.pop(self._gave_up_order.popleft(), None)
        self._next = first_after
        self.stats.lost += gap
        already = min(self._covered, gap)  # concealed for the playout while we waited: lost, not late
        self._covered -= already
        self.stats.covered_lost += already
        conceal = min(gap - already, c.max_conceal_frames)
        self.stats.concealed += conceal
        self.stats.skipped += gap - already - conceal
        if conceal == 0:
            return []
        nxt = self._pending.get(first_after)
        return [
            Slot(
                packet=None,
                frames=conceal,
                samples=conceal * self._frame_samples,
                next_packet=nxt,
                ready_at=now,
            )
        ]

    def _mark_done(self, ext: int) -> None:
        if len(self._done) == self._done.maxlen:
            self._done_set.discard(self._done[0])
        self._done.append(ext)
        self._done_set.add(ext)

    def _resync(self, ext: int) -> list[Slot]:
        """The sender restarted or jumped: release what is held (no concealment) and start over."""
        self.stats.resyncs += 1
        out = [Slot(packet=p, ready_at=p.arrival) for _, p in sorted(self._pending.items())]
        self.stats.released += len(out)
        self._pending.clear()
        self._done.clear()
        self._done_set.clear()
        self._gave_up.clear()
        self._gave_up_order.clear()
        self._next = ext
        self._highest = ext
        self._last_released_ts = None
        self._last_released_ext = None
        self._transit = None
        self._covered = 0
        return out

    def _learn(self, now: float, depth: float) -> None:
        self._learnt = min(self.config.max_wait, max(self._learnt, depth))
        self._learnt_at = now
        self._update_stats_wait(self.wait)

    def _decay(self, now: float) -> None:
        if self._learnt > 0.0 and now > self._learnt_at:
            self._learnt *= math.pow(0.5, (now - self._learnt_at) / self.config.decay_half_life)
            self._learnt_at = now
            self._update_stats_wait(self.wait)

    def _update_jitter(self, pkt: Packet) -> None:
        # RFC 3550 6.4.1: J += (|D| - J) / 16, D the change in transit time between packets.
        transit = pkt.arrival - pkt.timestamp / self.clock_rate
        if self._transit is not None:
            d = abs(transit - self._transit)
            if d < 1.0:  # ignore timestamp jumps (sender pauses, restarts)
                self._jitter += (d - self._jitter) / 16.0
                self.stats.jitter_ms = self._jitter * 1000.0
        self._transit = transit
        self._update_stats_wait(self.wait)

    def _update_stats_wait(self, wait: float) -> None:
        self.stats.wait_ms = wait * 1000.0
        self.stats.max_wait_ms = max(self.stats.max_wait_ms, self.stats.wait_ms)
