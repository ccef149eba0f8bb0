"""ReorderWindow: synthetic packet streams on a fake clock."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.rtc.reorder import Packet, ReorderConfig, ReorderWindow, Slot

F = 0.020


def pkt(seq: int, t: float, ts: int | None = None) -> Packet:
    return Packet(seq=seq % 65536, timestamp=(seq * 960 if ts is None else ts) % (1 << 32), payload=b"x", arrival=t)


class Run:
    """Feeds (seq, arrival) pairs, polls deadlines like the receiver's timer does, records output."""

    def __init__(self, config: ReorderConfig | None = None) -> None:
        self.w = ReorderWindow(config)
        self.out: list[tuple[float, Slot]] = []

    def _take(self, now: float, slots: list[Slot]) -> None:
        self.out += [(now, s) for s in slots]

    def advance_to(self, now: float) -> None:
        while (d := self.w.deadline) is not None and d <= now:
            self._take(d, self.w.poll(d))

    def push(self, p: Packet) -> None:
        self.advance_to(p.arrival)
        self._take(p.arrival, self.w.push(p))

    def seqs(self) -> list[int | str]:
        res: list[int | str] = []
        for _, s in self.out:
            res.append(s.packet.seq if s.packet else f"C{s.frames}")
        return res

    def delays(self) -> list[float]:
        return [now - s.packet.arrival for now, s in self.out if s.packet]


def test_in_order_is_released_immediately() -> None:
    r = Run()
    for i in range(100):
        r.push(pkt(i, i * F))
    assert r.seqs() == list(range(100))
    assert max(r.delays()) == 0.0
    assert r.w.pending == 0


def test_single_loss_is_concealed_after_one_frame_and_delay_returns_to_zero() -> None:
    r = Run()
    for i in range(50):
        if i != 10:
            r.push(pkt(i, i * F))
    r.advance_to(60 * F)
    assert r.seqs() == list(range(10)) + ["C1"] + list(range(11, 50))
    st = r.w.stats
    assert (st.lost, st.concealed, st.late_dropped) == (1, 1, 0)
    # Packet 11 waited one frame for 10; packet 12 (arriving at the deadline) and later: no delay.
    d = r.delays()
    assert max(d) <= F + 1e-9
    assert all(x == 0.0 for x in d[12:])


def test_reordered_packet_in_time_is_used() -> None:
    r = Run()
    arrivals = [(0, 0.0), (1, F), (3, 3 * F), (2, 3 * F + 0.010), (4, 4 * F)]
    for s, t in arrivals:
        r.push(pkt(s, t))
    assert r.seqs() == [0, 1, 2, 3, 4]
    assert r.w.stats.reordered == 1
    assert r.w.stats.concealed == 0


def test_late_packet_is_dropped_and_window_grows_then_shrinks() -> None:
    r = Run()
    for i in range(20):
        r.push(pkt(i, i * F))
    r.push(pkt(21, 21 * F))  # 20 missing
    r.advance_to(21 * F + 0.05)  # give up on 20
    r.push(pkt(20, 21 * F + 0.06))  # arrives after concealment
    assert r.w.stats.late_dropped == 1
    assert "C1" in r.seqs() and r.seqs().count(20) == 0
    grown = r.w.wait
    assert grown > 0.05
    # A long clean stretch lets the learnt depth decay back to the floor.
    for i in range(22, 22 + 50 * 60):
        r.push(pkt(i, i * F))
    assert abs(r.w.wait - 0.020) < 0.002  # back at the one-frame floor


def test_duplicates_are_dropped() -> None:
    r = Run()
    for i in range(10):
        r.push(pkt(i, i * F))
        r.push(pkt(i, i * F + 0.001))
    r.push(pkt(12, 12 * F))
    r.push(pkt(12, 12 * F + 0.001))  # duplicate of a held packet
    assert r.seqs() == list(range(10))
    assert r.w.stats.duplicates == 11


def test_burst_loss_conceals_at_most_max_frames_and_skips_the_rest() -> None:
    r = Run(ReorderConfig(max_conceal_frames=5))
    for i in list(range(10)) + list(range(30, 40)):
        r.push(pkt(i, i * F))
    r.advance_to(50 * F)
    assert r.seqs() == list(range(10)) + ["C5"] + list(range(30, 40))
    st = r.w.stats
    assert (st.lost, st.concealed, st.skipped) == (20, 5, 15)


def test_sequence_wraparound() -> None:
    r = Run()
    seqs = [65530 + i for i in range(12)]  # crosses 65535 -> 0
    for k, s in enumerate(seqs):
        if s != 65536:  # lose seq 0 right after the wrap
            r.push(pkt(s, k * F))
    r.advance_to(20 * F)
    expected: list[int | str] = [s % 65536 for s in seqs]
    expected[expected.index(0)] = "C1"
    assert r.seqs() == expected


def test_timestamp_jump_with_contiguous_sequence_is_not_loss() -> None:
    r = Run()
    for i in range(10):
        r.push(pkt(i, i * F))
    for i in range(10, 20):  # sender paused: timestamps jump by 5 s, sequence numbers do not
        r.push(pkt(i, i * F, ts=i * 960 + 240_000))
    assert r.seqs() == list(range(20))
    assert r.w.stats.lost == 0


def test_big_sequence_jump_resyncs_instead_of_concealing() -> None:
    r = Run()
    for i in range(10):
        r.push(pkt(i, i * F))
    for k, i in enumerate(range(5000, 5010)):
        r.push(pkt(i, (10 + k) * F))
    assert r.seqs() == list(range(10)) + list(range(5000, 5010))
    assert r.w.stats.resyncs == 1 and r.w.stats.concealed == 0


def test_pending_is_bounded() -> None:
    cfg = ReorderConfig(max_pending=4, min_wait=10.0, max_wait=10.0)
    r = Run(cfg)
    r.push(pkt(0, 0.0))
    for i in range(2, 12):  # 1 never comes; the wait is huge, so only the bound releases
        r.push(pkt(i, i * F))
        assert r.w.pending < 4
    assert r.w.stats.overflows == 1
    assert r.seqs()[:2] == [0, "C1"]


@settings(max_examples=200, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    loss=st.floats(0.0, 0.3),
    jitter=st.floats(0.0, 0.06),
    dup=st.floats(0.0, 0.1),
    seq0=st.integers(0, 65535),
)
def test_random_network_output_is_ordered_bounded_and_complete(
    seed: int, loss: float, jitter: float, dup: float, seq0: int
) -> None:
    """Whatever the network does: strictly increasing output, one slot per sequence number (released or
    given up), no packet held longer than max_wait, nothing left behind at the end."""
    rnd = random.Random(seed)
    cfg = ReorderConfig()
    n = 300
    events: list[Packet] = []
    for i in range(n):
        if rnd.random() < loss:
            continue
        t = i * F + rnd.uniform(0, jitter)
        events.append(pkt(seq0 + i, t))
        if rnd.random() < dup:
            events.append(pkt(seq0 + i, t + rnd.uniform(0, 0.05)))
    events.sort(key=lambda p: p.arrival)
    r = Run(cfg)
    for p in events:
        r.push(p)
    r.advance_to(n * F + 1.0)
    covered = 0
    last = None
    for now, s in r.out:
        assert now - (s.packet.arrival if s.packet else now) <= cfg.max_wait + 1e-9
        if s.packet:
            ext = (s.packet.seq - seq0) % 65536
            assert last is None or ext > last
            last = ext
            covered += 1
    st_ = r.w.stats
    assert covered == st_.released
    assert r.w.pending == 0
    first = (events[0].seq - seq0) % 65536 if events else 0
    last_seq = max(((p.seq - seq0) % 65536 for p in events), default=0)
    if events:
        assert st_.released + st_.lost == last_seq - first + 1


def test_concealed_duration_is_one_packet_even_for_losses_two_apart() -> None:
    """Packet duration is learnt from consecutive packets only, never across a concealed gap."""
    r = Run()
    for i in range(30):
        if i not in (10, 12):
            r.push(pkt(i, i * F))
    r.advance_to(40 * F)
    concealed = [s for _, s in r.out if s.packet is None]
    assert [(s.frames, s.samples) for s in concealed] == [(1, 960), (1, 960)]


def test_cover_conceals_for_the_playout_and_a_late_packet_then_plays() -> None:
    from bridge.rtc.reorder import FOLLOW_PLAYOUT

    w = ReorderWindow(FOLLOW_PLAYOUT)
    assert [s.packet.seq for s in w.push(pkt(0, 0.0)) if s.packet] == [0]
    assert w.coverable
    slots = w.cover(0.035)  # packet 1 is due, the playout needs audio now
    assert len(slots) == 1 and slots[0].covered and slots[0].frames == 1 and slots[0].samples == 960
    late = w.push(pkt(1, 0.041))  # it came after all: played after the concealment (a slip)
    assert [s.packet.seq for s in late if s.packet] == [1]
    assert w.stats.covered == 1 and w.stats.covered_late == 1 and w.stats.covered_lost == 0
    assert w.stats.late_dropped == 0 and w.stats.lost == 0


def test_a_covered_slot_whose_packet_never_comes_is_not_concealed_twice() -> None:
    from bridge.rtc.reorder import FOLLOW_PLAYOUT

    w = ReorderWindow(FOLLOW_PLAYOUT)
    w.push(pkt(0, 0.0))
    assert len(w.cover(0.035)) == 1  # slot 1 covered
    assert len(w.cover(0.055)) == 1  # slot 2 covered too
    out = w.push(pkt(3, 0.061))  # slots 1 and 2 were lost: nothing more to conceal, 3 plays
    assert [(s.packet.seq if s.packet else "C") for s in out] == [3]
    assert w.stats.covered_lost == 2 and w.stats.lost == 2 and w.stats.concealed == 0
    assert w.push(pkt(1, 0.07)) == [] and w.stats.late_dropped == 1  # 1 arriving now is late


def test_cover_is_bounded_and_gives_up_a_hole_with_later_packets_waiting() -> None:
    from bridge.rtc.reorder import FOLLOW_PLAYOUT, ReorderConfig

    w = ReorderWindow(ReorderConfig(min_wait=0.5, jitter_factor=0.0, max_cover_frames=2))
    w.push(pkt(0, 0.0))
    assert len(w.cover(0.03)) == 1 and len(w.cover(0.05)) == 1
    assert not w.coverable and w.cover(0.07) == []  # the stream stopped: silence after two frames
    w2 = ReorderWindow(ReorderConfig(min_wait=0.5, jitter_factor=0.0))  # a long hole wait, on purpose
    w2.push(pkt(0, 0.0))
    assert w2.push(pkt(2, 0.041)) == []  # 1 is missing, 2 waits behind it
    out = w2.cover(0.045)  # the playout needs 1 now: give up on it, FEC from 2, then 2
    assert [(s.packet.seq if s.packet else f"C{s.frames}") for s in out] == ["C1", 2]
    assert out[0].next_packet is not None and out[0].next_packet.seq == 2
    assert FOLLOW_PLAYOUT.min_wait == 0.0 and FOLLOW_PLAYOUT.jitter_factor == 0.0
