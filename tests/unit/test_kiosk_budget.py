"""Call budget: per-call cap and call minutes per sliding hour, on a fake clock."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.errors import ConfigError
from bridge.kiosk.budget import BudgetSettings, CallBudget


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def call(b: CallBudget, clock: Clock, seconds: float, gap: float = 0.0) -> None:
    b.call_started()
    clock.t += seconds
    b.call_ended()
    clock.t += gap


def test_no_hourly_limit_only_caps_each_call() -> None:
    clock = Clock()
    b = CallBudget(BudgetSettings(max_call_s=600), clock)
    for _ in range(10):
        call(b, clock, 599, 1)
    assert b.may_wake() and b.refusal() is None and b.remaining_s() is None
    b.call_started()
    assert b.deadline() == clock.t + 600
    assert not b.may_wake()  # one call at a time


def test_budget_spent_then_frees_as_the_hour_slides() -> None:
    clock = Clock()
    b = CallBudget(BudgetSettings(max_minutes_per_hour=10, min_call_s=20), clock)
    call(b, clock, 300, 60)  # 5 min at t=1000..1300, now 1360
    call(b, clock, 290)  # 4:50 at 1360..1650: 9:50 used, 10 s left < 20 s
    assert b.used_s() == pytest.approx(590)
    assert not b.may_wake()
    reason = b.refusal()
    assert reason is not None and reason.startswith("call budget spent: 9.8 of 10 call minutes")
    # it frees once 10 s of the first call slid out: at 1000 + 3600 + 10
    assert b.wake_allowed_at() == pytest.approx(4610)
    clock.t = 4609
    assert not b.may_wake()
    clock.t = 4610.01
    assert b.may_wake()


def test_deadline_is_the_earlier_of_cap_and_budget() -> None:
    clock = Clock()
    b = CallBudget(BudgetSettings(max_call_s=900, max_minutes_per_hour=10), clock)
    call(b, clock, 420, 100)  # 7 min used
    b.call_started()  # 3 min left in the hour
    assert b.deadline() == pytest.approx(clock.t + 180)
    clock.t += 100
    assert b.deadline() == pytest.approx(clock.t + 80)
    clock.t += 80
    assert b.deadline() == pytest.approx(clock.t)


def test_deadline_accounts_for_old_calls_sliding_out() -> None:
    clock = Clock()
    b = CallBudget(BudgetSettings(max_call_s=3000, max_minutes_per_hour=10), clock)
    call(b, clock, 540, 3000)  # 9 min at 1000..1540; now 4540
    b.call_started()  # at 4540: 1 min left; the old call slides out from t=4600 (at the same rate)
    # used(t) = (1540 - (t - 3600)) + (t - 4540) for 4600 <= t <= 5140 = 600 exactly: the limit is hit
    # at t = 4600, when the open call has used 60 s
    assert b.deadline() == pytest.approx(4600)


@given(
    st.lists(st.tuples(st.floats(1, 900), st.floats(0, 2000)), max_size=8),
    st.floats(1, 60),
    st.floats(30, 1800),
)
@settings(max_examples=150, deadline=None)
def test_deadline_matches_a_brute_force_walk(calls: list[tuple[float, float]], minutes: float, cap: float) -> None:
    clock = Clock()
    b = CallBudget(BudgetSettings(max_call_s=cap, max_minutes_per_hour=minutes, min_call_s=0), clock)
    for length, gap in calls:
        call(b, clock, length, gap)
    b.call_started()
    deadline = b.deadline()
    assert deadline is not None
    # walk forward in 1 s steps: the first time used >= limit (or the cap), within a step
    limit = minutes * 60
    start = clock.t
    t = start
    while t - start < cap and b.used_s(t) < limit:
        t += 1.0
    assert deadline == pytest.approx(min(t, start + cap), abs=1.0 + 1e-6)
    assert deadline >= start


@given(st.lists(st.tuples(st.floats(1, 900), st.floats(0, 2000)), min_size=1, max_size=8), st.floats(1, 60))
@settings(max_examples=150, deadline=None)
def test_wake_allowed_at_is_exact(calls: list[tuple[float, float]], minutes: float) -> None:
    clock = Clock()
    b = CallBudget(BudgetSettings(max_minutes_per_hour=minutes, min_call_s=20), clock)
    for length, gap in calls:
        call(b, clock, length, gap)
    at = b.wake_allowed_at()
    assert at >= clock.t
    clock.t = at + 1e-6
    assert b.may_wake()
    if at > clock.t - 1e-6 + 0.5:
        clock.t = at - 0.5
        assert not b.may_wake()


def test_bad_settings_are_config_errors() -> None:
    with pytest.raises(ConfigError):
        BudgetSettings(max_call_s=0)
    with pytest.raises(ConfigError):
        BudgetSettings(max_minutes_per_hour=61)


def test_call_started_twice_is_a_bug() -> None:
    b = CallBudget(BudgetSettings(), Clock())
    b.call_started()
    with pytest.raises(RuntimeError):
        b.call_started()
    assert b.call_ended() >= 0
    assert b.call_ended() == 0.0
