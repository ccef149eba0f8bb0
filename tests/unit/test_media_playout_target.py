"""The playout's latency policies on their own, with a hand-driven clock (bridge.media.playout_target)."""

from __future__ import annotations

from bridge.media.playout_target import AdaptiveTarget, DriftControl, JitterTarget

MS = 48  # samples per ms


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_underruns_raise_one_step_per_gap_up_to_the_cap() -> None:
    clock = Clock()
    target = AdaptiveTarget(5, step_ms=10, max_ms=30, raise_gap_s=1.0, clock=clock)
    assert target.ms == 5
    target.on_underrun()
    target.on_underrun()  # the same stall
    clock.t = 0.5
    target.on_underrun()
    assert target.ms == 15
    for k in range(1, 5):
        clock.t = 1.0 * k + 0.01
        target.on_underrun()
    assert target.ms == 30  # capped


def test_relaxes_half_steps_after_quiet_time_never_below_base() -> None:
    clock = Clock()
    target = AdaptiveTarget(5, step_ms=10, max_ms=80, relax_s=10, clock=clock)
    target.on_underrun()
    clock.t = 1.5
    target.on_underrun()
    assert target.ms == 25
    clock.t = 11.0
    target.relax()
    assert target.ms == 25  # 10 s have not passed since the last raise
    clock.t = 11.6
    target.relax()
    assert target.ms == 20
    target.relax()
    assert target.ms == 20  # the next half step waits another 10 s
    for k in range(1, 10):
        target.relax(now=11.6 + 10 * k)
    assert target.ms == 5


def test_drift_within_tolerance_is_left_alone() -> None:
    drift = DriftControl(window_ms=100, tolerance_ms=2)
    for _ in range(50):
        assert drift.plan(depth=(5 + 1) * MS + 480, n=480, target=5 * MS).extra == 0


def test_drift_shaves_a_standing_excess_at_most_max_stretch_per_pull() -> None:
    drift = DriftControl(window_ms=100, tolerance_ms=2, max_stretch=0.02)
    depth = 25 * MS + 480  # 20 ms above a 5 ms target after every pull
    shaved = 0
    for _ in range(400):
        plan = drift.plan(depth=depth, n=480, target=5 * MS)
        assert plan.discard == 0 and plan.extra <= int(480 * 0.02)
        if plan.extra:
            drift.shaved(plan.extra)
            shaved += plan.extra
            depth -= plan.extra
    assert depth <= (5 + 2) * MS + 480 + int(480 * 0.02)
    assert shaved >= 13 * MS


def test_a_burst_far_above_the_target_is_cut_at_once() -> None:
    drift = DriftControl(hard_excess_ms=200)
    plan = drift.plan(depth=1000 * MS, n=480, target=20 * MS)
    assert plan.extra == 0 and plan.discard == 1000 * MS - 20 * MS - 480


def test_reset_forgets_a_planned_shave_reset_window_keeps_it() -> None:
    drift = DriftControl(window_ms=10, tolerance_ms=2)
    assert drift.plan(depth=50 * MS, n=480, target=5 * MS).extra > 0
    drift.reset_window()
    assert drift.plan(depth=50 * MS, n=480, target=5 * MS).extra > 0
    drift.reset()
    assert drift.plan(depth=5 * MS + 480, n=480, target=5 * MS).extra == 0


def _arrivals(seconds: float, jitter_ms: float, seed: int = 1, spike_at: float | None = None) -> list[tuple]:
    """(media_s, arrival) of a 20 ms packet stream with uniform +-jitter that keeps its order."""
    import random

    rng = random.Random(seed)
    out, last = [], 0.0
    for k in range(int(seconds / 0.020)):
        media = k * 0.020
        due = media + 0.020 + rng.uniform(-jitter_ms, jitter_ms) / 1000
        if spike_at is not None and abs(media - spike_at) < 0.01:
            due += 0.200
        last = max(last, due)
        out.append((media, last))
    return out


def _feed(target: JitterTarget, clock: Clock, arrivals: list[tuple], offset: float = 0.0) -> None:
    for media, at in arrivals:
        clock.t = at + offset
        target.observe(media + offset, clock.t)


def test_jitter_target_follows_the_arrival_jitter() -> None:
    clock = Clock()
    clean = JitterTarget(clock=clock)
    _feed(clean, clock, _arrivals(10, 0.0))
    assert clean.ready and clean.ms <= 2
    clock2 = Clock()
    wifi = JitterTarget(clock=clock2)
    _feed(wifi, clock2, _arrivals(20, 15.0))
    # frames keep their order, so a frame waits for a slow one ahead: the spread is up to ~30 ms
    assert 22 <= wifi.ms <= 32
    assert 0 <= wifi.delay_ms <= 32


def test_one_spike_does_not_move_it_and_old_jitter_is_forgotten_slowly() -> None:
    clock = Clock()
    target = JitterTarget(clock=clock)
    _feed(target, clock, _arrivals(40, 1.0, spike_at=30.0))
    assert target.ms <= 3  # one 200 ms outlier among 80 half-second maxima: below the 95 % quantile
    clock2 = Clock()
    jittery = JitterTarget(clock=clock2)
    _feed(jittery, clock2, _arrivals(20, 15.0))
    raised = jittery.ms
    _feed(jittery, clock2, _arrivals(30, 1.0), offset=20.0)
    assert jittery.ms == raised  # NetEq's forget factor keeps a raised target for a while ...
    _feed(jittery, clock2, _arrivals(100, 1.0), offset=50.0)
    assert jittery.ms <= 3  # ... and lets it go after ~90 s of calm


def test_slack_mode_builds_up_a_short_margin_and_shaves_only_whole_blocks() -> None:
    drift = DriftControl(window_ms=100, tolerance_ms=1, max_stretch=0.02)
    drift.slack(2 * MS)  # the least slack in the window: 2 ms, against a 10 ms target
    plans = [drift.plan(depth=30 * MS, n=480, target=10 * MS, slack=True) for _ in range(12)]
    assert any(p.extra < 0 for p in plans) and all(p.extra >= -int(480 * 0.02) for p in plans)
    drift = DriftControl(window_ms=100, tolerance_ms=1)
    for _ in range(10):
        drift.slack(17 * MS)  # 7 ms above the target: less than a 10 ms block, left alone
        assert drift.plan(depth=30 * MS, n=480, target=10 * MS, slack=True).extra == 0
    drift = DriftControl(window_ms=100, tolerance_ms=1)
    shaved = 0
    for _ in range(300):
        drift.slack(35 * MS - shaved)  # 25 ms above: shaved to within one block of the target, no further
        plan = drift.plan(depth=60 * MS, n=480, target=10 * MS, slack=True)
        assert 0 <= plan.extra <= int(480 * 0.02)
        drift.shaved(plan.extra)
        shaved += plan.extra
    assert 15 * MS - int(480 * 0.02) <= shaved <= 15 * MS + MS
