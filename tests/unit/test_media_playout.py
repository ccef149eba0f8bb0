"""PlayoutBuffer: exact accounting, flush within one block, the discard gate, bounds and drift control."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.media.playout import PlayoutBuffer, PlayoutEvent

BLOCK = 480


def ramp(n: int, start: int = 1) -> np.ndarray:
    """Distinct non-zero samples, so any misplaced sample shows."""
    return ((np.arange(n) + start) % 30000 + 1).astype(np.int16)


def pull_all(buf: PlayoutBuffer, sizes: list[int]) -> np.ndarray:
    return np.concatenate([buf.pull(n) for n in sizes]) if sizes else np.zeros(0, np.int16)


def test_push_pull_exact_across_odd_sizes() -> None:
    rng = np.random.default_rng(1)
    buf = PlayoutBuffer()
    data = ramp(20_000)
    pos = 0
    while pos < len(data):
        n = int(rng.integers(1, 1500))
        assert buf.push(data[pos : pos + n], "a") == len(data[pos : pos + n])
        pos += n
    sizes = [int(x) for x in rng.integers(1, 777, 60)]
    out = pull_all(buf, sizes)
    total = sum(sizes)
    assert total > len(data)
    np.testing.assert_array_equal(out[: len(data)], data)
    assert not out[len(data) :].any()
    assert buf.queued_samples == 0
    assert buf.handed_ms("a") == pytest.approx(len(data) / 48)


def test_items_play_in_order_and_are_counted_separately() -> None:
    buf = PlayoutBuffer()
    buf.push(ramp(1000), "a")
    buf.push(ramp(500, 5), "b", 1)
    buf.pull(1200)
    assert buf.handed_ms("a") == pytest.approx(1000 / 48)
    assert buf.handed_ms("b", 1) == pytest.approx(200 / 48)
    assert buf.received_ms("b", 1) == pytest.approx(500 / 48)


def test_flush_fades_within_one_block_then_silence() -> None:
    buf = PlayoutBuffer()
    tone = np.full(48_000, 20_000, dtype=np.int16)
    buf.push(tone, "a")
    for _ in range(10):
        buf.pull(BLOCK)
    result = buf.flush(fade_ms=5)
    assert result.fade_samples == 240
    assert result.dropped_samples == 48_000 - 10 * BLOCK - 240
    assert ("a", 0) in result.items
    nxt = buf.pull(BLOCK)
    fade = nxt[:240].astype(np.int32)
    assert (fade[:-1] > 0).all() and (np.diff(fade) <= 0).all() and fade[0] <= 20_000
    assert not nxt[240:].any()
    assert not pull_all(buf, [BLOCK] * 20).any()
    assert buf.queued_samples == 0


def test_flush_stop_time_and_events() -> None:
    events: list[PlayoutEvent] = []
    buf = PlayoutBuffer(listener=events.append)
    buf.set_output_latency(0.02)
    buf.push(np.full(9600, 1000, np.int16), "a")
    buf.pull(BLOCK)
    assert [e.kind for e in events] == ["first_sample"]
    res = buf.flush(fade_ms=5)
    assert res.stopped_at is None
    buf.pull(BLOCK)
    assert res.stopped_at is not None and events[-1].kind == "stopped"
    # Silent after the 5 ms fade plus what the device still holds (20 ms), measured from the pull.
    assert res.stopped_at - res.requested_at == pytest.approx(0.025, abs=0.005)


def test_flush_with_nothing_queued() -> None:
    buf = PlayoutBuffer()
    res = buf.flush()
    assert res.dropped_samples == 0 and res.fade_samples == 0 and res.stopped_at is not None
    assert not buf.pull(BLOCK).any()


def test_late_pushes_of_a_flushed_item_are_discarded() -> None:
    buf = PlayoutBuffer()
    buf.push(ramp(4800), "a")
    buf.pull(BLOCK)
    buf.flush(fade_ms=0)
    assert buf.is_gated("a")
    assert buf.push(ramp(4800), "a") == 0
    assert buf.counters.gated_dropped == 4800
    assert not buf.pull(BLOCK).any()
    # The next response plays normally.
    assert buf.push(ramp(960), "b") == 960
    np.testing.assert_array_equal(buf.pull(960), ramp(960))


def test_drop_item_keeps_other_items() -> None:
    buf = PlayoutBuffer()
    buf.push(ramp(960), "a")
    buf.push(ramp(960, 7), "b")
    buf.push(ramp(960), "a")
    res = buf.drop_item("b")
    assert res.dropped_samples == 960
    assert buf.push(ramp(10), "b") == 0
    np.testing.assert_array_equal(buf.pull(1920), np.concatenate([ramp(960), ramp(960)]))


def test_played_ms_exact_and_latency_corrected() -> None:
    buf = PlayoutBuffer()
    buf.push(ramp(48_000), "a")
    for _ in range(30):
        buf.pull(BLOCK)
    st = buf.stats("a")
    assert st is not None and st.last_handed is not None
    assert buf.played_ms("a", now=st.last_handed) == pytest.approx(300.0)
    buf.set_output_latency(0.05)
    assert buf.played_ms("a", now=st.last_handed) == pytest.approx(250.0)
    assert buf.played_ms("a", now=st.last_handed + 0.02) == pytest.approx(270.0)
    assert buf.played_ms("a", now=st.last_handed + 1.0) == pytest.approx(300.0)
    assert buf.played_ms("unknown") == 0.0


@pytest.mark.parametrize("policy", ["drop_oldest", "drop_newest"])
def test_bounded_overflow(policy: str) -> None:
    buf = PlayoutBuffer(max_ms=100, overflow=policy)  # type: ignore[arg-type]
    data = ramp(9600)
    buf.push(data, "a")
    assert buf.queued_samples == 4800
    assert buf.counters.overflow_dropped == 4800
    out = buf.pull(4800)
    expected = data[4800:] if policy == "drop_oldest" else data[:4800]
    np.testing.assert_array_equal(out, expected)


def test_overflow_default_depends_on_mode() -> None:
    assert PlayoutBuffer().overflow == "drop_newest"
    assert PlayoutBuffer(target_ms=20).overflow == "drop_oldest"


class Clock:
    """A fake monotonic clock the low-latency tests advance by hand."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _run_producer(buf: PlayoutBuffer, ratio: float, pulls: int, gap: range | None = None) -> list[int]:
    """Producer pushes 20 ms frames at ``ratio`` x the consumer's 10 ms pull rate; returns depth per pull.
    A buffer built with a :class:`Clock` sees 10 ms pass per pull."""
    owed = 0.0
    frame = np.full(960, 100, np.int16)
    depths = []
    clock = buf._clock if isinstance(buf._clock, Clock) else None
    for i in range(pulls):
        owed += BLOCK * ratio
        while owed >= 960:
            owed -= 960
            if gap is None or i not in gap:
                buf.push(frame, "a")
        buf.pull(BLOCK)
        if clock is not None:
            clock.t += BLOCK / 48_000
        depths.append(buf.queued_samples)
    return depths


def test_drift_control_keeps_depth_near_target() -> None:
    buf = PlayoutBuffer(target_ms=20, clock=Clock())
    depths = _run_producer(buf, 1.01, 6000)  # 60 s with the producer 1 % fast
    assert max(depths[1000:]) <= (20 + 20 + 10) * 48
    assert buf.counters.drift_dropped > 0
    plain = PlayoutBuffer()
    grown = _run_producer(plain, 1.01, 6000)
    assert grown[-1] > 500 * 48  # without drift control latency grows without bound


def test_frames_landing_just_after_a_pull_never_underrun() -> None:
    """The target is the margin left after a pull: 20 ms frames that arrive 1 ms after every other 10 ms
    pull (with +-1 ms jitter) play without a gap, and the queue stays within one frame of the target."""
    now = [0.0]
    buf = PlayoutBuffer(target_ms=5, clock=lambda: now[0])
    rng = np.random.default_rng(3)
    frame = np.full(960, 100, np.int16)
    events: list[tuple[float, int]] = [(k * 0.010, 0) for k in range(6000)]  # pulls, 60 s
    events += [(0.001 + k * 0.020 + rng.uniform(-0.001, 0.001), 1) for k in range(3000)]  # frames
    depths = []
    for t, kind in sorted(events):
        now[0] = t
        if kind:
            buf.push(frame, "a")
        else:
            buf.pull(BLOCK)
            depths.append(buf.queued_samples)
    assert buf.counters.underruns == 0 and buf.counters.silent_pulls <= 1  # the very first pull
    assert buf.target_ms == 5
    assert max(depths[500:]) <= (5 + 20 + 2) * 48


def test_underrun_is_silence_and_adds_only_the_adaptive_step() -> None:
    """The stalled stretch is not replayed late: after the stall the queue holds what it held before plus
    the one adaptive step the underrun raised the target by (relaxed again after quiet seconds)."""
    buf = PlayoutBuffer(target_ms=20, adapt_step_ms=10, clock=Clock())
    before = _run_producer(buf, 1.0, 200)
    after = _run_producer(buf, 1.0, 400, gap=range(100, 110))  # producer stalls 100 ms
    assert buf.counters.underruns == 1 and buf.target_ms == 30
    assert max(after[300:]) <= max(before[50:]) + 10 * 48  # once drift control has settled


def test_hard_excess_dropped_at_once() -> None:
    clock = Clock()
    buf = PlayoutBuffer(target_ms=20, hard_excess_ms=200, clock=clock)
    buf.push(np.full(48_000, 5, np.int16), "a")  # a 1 s burst after a stall
    clock.t += 0.020  # past the start hold
    buf.pull(BLOCK)
    assert buf.queued_ms <= 20 + 1


def test_end_item_dry_is_not_an_underrun() -> None:
    buf = PlayoutBuffer()
    buf.push(ramp(960), "a")
    buf.end_item("a")
    pull_all(buf, [BLOCK] * 4)
    assert buf.counters.underruns == 0
    buf.push(ramp(960), "b")
    pull_all(buf, [BLOCK] * 4)
    assert buf.counters.underruns == 1


@settings(max_examples=150, deadline=None)
@given(
    chunks=st.lists(st.integers(1, 3000), min_size=1, max_size=20),
    pulls=st.lists(st.integers(1, 1000), min_size=1, max_size=30),
    after=st.lists(st.integers(1, 1000), min_size=1, max_size=5),
    fade_ms=st.integers(0, 10),
)
def test_property_played_and_flush(chunks: list[int], pulls: list[int], after: list[int], fade_ms: int) -> None:
    buf = PlayoutBuffer(max_ms=60_000)
    items = ["a", "b", "c"]
    sent: list[str] = []
    for i, n in enumerate(chunks):
        item = items[i * len(items) // len(chunks)]
        buf.push(np.full(n, 1000, np.int16), item)
        sent.extend([item] * n)
    out = pull_all(buf, pulls)
    played = min(len(sent), sum(pulls))
    for item in items:
        want = sent[:played].count(item)
        assert buf.handed_ms(item) == pytest.approx(want / 48)
        assert buf.played_ms(item, now=1e12) == pytest.approx(want / 48)
        assert buf.played_ms(item) <= buf.received_ms(item)
    np.testing.assert_array_equal(out != 0, np.arange(len(out)) < played)
    res = buf.flush(fade_ms=fade_ms)
    remaining = len(sent) - played
    assert res.fade_samples == min(remaining, fade_ms * 48)
    assert res.dropped_samples == remaining - res.fade_samples
    tail = pull_all(buf, after)
    nz = np.flatnonzero(tail)
    assert len(nz) == 0 or nz[-1] < fade_ms * 48
    unplayed = set(sent[played:])
    assert unplayed <= {k[0] for k in res.items}
    for key in res.items:  # everything queued or playing at the flush is gated
        assert buf.push(np.full(10, 1, np.int16), key[0]) == 0


def test_low_latency_target_adapts_to_late_frames_and_relaxes_back() -> None:
    """A late frame (underrun while audio flows) raises the target one step; quiet time brings it back."""
    now = [0.0]
    buf = PlayoutBuffer(target_ms=20, adapt_step_ms=10, adapt_max_ms=40, adapt_relax_s=10, clock=lambda: now[0])
    frame = np.full(960, 1000, dtype=np.int16)

    def tick(pushes: int) -> None:  # 20 ms of real time: two 10 ms pulls, `pushes` frames arriving
        for _ in range(pushes):
            buf.push(frame, "a")
        for _ in range(2):
            buf.pull(480)
            now[0] += 0.010

    tick(2)  # start with one frame of cushion
    for _ in range(10):
        tick(1)
    assert buf.target_ms == 20 and buf.counters.underruns == 0
    for _ in range(4):
        tick(0)  # the stream stalls for 80 ms: more than the start hold and the target cover, it runs dry
    assert buf.counters.underruns >= 1
    raised = buf.target_ms
    assert raised is not None and 20 < raised <= 40
    for _ in range(3):
        tick(0)  # more late frames: capped
    assert buf.target_ms is not None and buf.target_ms <= 40
    for _ in range(600):  # 12 s of on-time frames
        tick(1)
    assert buf.target_ms is not None and buf.target_ms < 40  # relaxing toward the configured 20 ms
    for _ in range(2000):
        tick(1)
    assert buf.target_ms == 20


def test_one_stall_raises_the_target_once() -> None:
    """Dry pulls in quick succession (one busy stretch) raise the target one step; a later one raises again."""
    clock = Clock()
    buf = PlayoutBuffer(target_ms=5, adapt_step_ms=10, clock=clock)
    frame = np.full(960, 100, np.int16)

    def stall_at(t: float) -> None:
        clock.t = t
        buf.push(frame, "a")
        for _ in range(8):  # play it, then run dry twice within 40 ms
            clock.t += 0.010
            buf.pull(BLOCK)
            if _ == 3:
                buf.push(frame, "a")

    stall_at(0.0)
    assert buf.counters.underruns == 2 and buf.target_ms == 15
    stall_at(2.0)
    assert buf.target_ms == 25


def test_reported_arrivals_replace_the_underrun_steps() -> None:
    """Once the receive path reports arrivals, the margin is the measured jitter plus a guard, a dry pull
    does not step it up, and ms_until_dry says when the device would find the queue short."""
    clock = Clock()
    buf = PlayoutBuffer(target_ms=5, adapt_step_ms=10, clock=clock)
    frame = np.full(960, 100, np.int16)
    assert buf.ms_until_dry() is None  # nothing playing
    for k in range(300):  # 3 s of frames arriving on time, 10 ms pulls
        clock.t = k * 0.010
        if k % 2 == 0:
            buf.arrival(k * 0.010, clock.t)
            buf.push(frame, "a")
        buf.pull(BLOCK)
    assert buf.jitter_ms is not None and buf.jitter_ms <= 2
    assert buf.target_ms is not None and buf.target_ms <= 8
    until = buf.ms_until_dry()
    assert until is not None and 0 < until <= buf.queued_ms + 10.5  # the pull that finds < 10 ms
    clock.t += 0.010
    while buf.queued_samples:  # the stream stops: the queue runs dry
        buf.pull(BLOCK)
        clock.t += 0.010
    buf.pull(BLOCK)
    assert buf.counters.underruns == 1
    assert buf.target_ms <= 8  # no 10 ms step
    assert sum(buf.counters.held_ms_hist) == 150  # every push was measured


def test_a_new_stream_starts_its_jitter_afresh() -> None:
    """A reconnect's stream restarts its media clock: measured against the old stream's arrivals, every
    packet looked ~the old stream's length late and the margin sat at its maximum (found by the resilience
    benchmark: WebRTC replies ~250 ms later after every reconnect)."""

    def play(buf: PlayoutBuffer, clock: Clock, seconds: float) -> None:
        t0 = clock.t
        for k in range(int(seconds / 0.020)):  # 20 ms packets, on time, media time from 0
            clock.t = t0 + k * 0.020
            buf.arrival(k * 0.020, clock.t)
        clock.t += 0.020

    for fresh in (False, True):
        clock = Clock()
        buf = PlayoutBuffer(target_ms=5, clock=clock)
        play(buf, clock, 4.0)
        assert buf.jitter_ms is not None and buf.jitter_ms <= 2
        if fresh:
            buf.new_stream()
        play(buf, clock, 4.0)  # the next connection's stream, media time from 0 again
        assert buf.jitter_ms is not None
        assert (buf.jitter_ms <= 2) is fresh, buf.jitter_ms
