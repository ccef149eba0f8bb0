"""KioskStatus: states, counters, day roll-over and the health rule, on fake clocks."""

from __future__ import annotations

import logging

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from bridge.kiosk.health import KioskState, KioskStatus


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def samples(status: KioskStatus) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(status.registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def test_state_changes_log_one_line_each_and_notify(caplog: pytest.LogCaptureFixture) -> None:
    seen = []
    status = KioskStatus(on_change=lambda old, new, why: seen.append((old.value, new.value, why)))
    assert status.snapshot()["state"] == "starting"  # not listening yet: the devices are still opening
    with caplog.at_level(logging.INFO, logger="bridge.kiosk.health"):
        status.set_state(KioskState.IDLE)
        status.set_state(KioskState.CONNECTING)
        status.set_state(KioskState.CONNECTING)  # no change: nothing
        status.set_state(KioskState.BUDGET_SPENT, "30 of 30 call minutes used")
        status.set_state(KioskState.BUDGET_SPENT, "next call possible in 40 s")  # same state: no line
    assert status.snapshot()["state_reason"] == "next call possible in 40 s"
    assert [r.getMessage() for r in caplog.records] == [
        "kiosk: starting -> idle",
        "kiosk: idle -> connecting",
        "kiosk: connecting -> budget_spent (30 of 30 call minutes used)",
    ]
    assert seen == [
        ("starting", "idle", None),
        ("idle", "connecting", None),
        ("connecting", "budget_spent", "30 of 30 call minutes used"),
    ]
    s = samples(status)
    assert s[("bridge_kiosk_state", (("bridge_kiosk_state", "budget_spent"),))] == 1
    assert s[("bridge_kiosk_state", (("bridge_kiosk_state", "idle"),))] == 0


def test_calls_false_wakes_and_call_seconds() -> None:
    clock = Clock(100.0)
    status = KioskStatus(clock=clock)
    status.on_wake()
    status.on_call_start()
    clock.t += 42.5
    status.on_call_end("idle", user_turns=3)
    status.on_wake()
    status.on_call_start()
    clock.t += 8
    status.on_call_end("idle", user_turns=0)  # nobody spoke to it: a false wake
    status.on_call_end("device_lost", user_turns=1, seconds=5)
    s = samples(status)
    assert s[("bridge_kiosk_calls_total", (("reason", "idle"),))] == 2
    assert s[("bridge_kiosk_calls_total", (("reason", "device_lost"),))] == 1
    assert s[("bridge_kiosk_calls_total", (("reason", "max_call"),))] == 0
    assert s[("bridge_kiosk_call_seconds_total", ())] == pytest.approx(55.5)
    assert s[("bridge_kiosk_false_wakes_total", ())] == 1
    assert s[("bridge_kiosk_wakes_total", (("source", "vad"),))] == 2
    assert status.calls_today == 2 and status.wakes_today == 2


def test_counts_per_day_roll_over_at_local_midnight() -> None:
    wall = Clock(1_800_000_000.0)
    status = KioskStatus(wall=wall)
    status.on_wake()
    status.on_call_start()
    wall.t += 86_400
    assert status.snapshot()["calls_today"] == 0
    status.on_call_start()
    assert status.calls_today == 1 and status.wakes_today == 0


def test_unhealthy_only_when_an_open_microphone_goes_silent() -> None:
    clock = Clock(0.0)
    status = KioskStatus(clock=clock, mic_stale_s=10)
    assert status.unhealthy() is None  # starting: grace period
    clock.t = 11
    assert status.unhealthy() == "no microphone frame for 11 s"
    status.mic_alive()
    assert status.unhealthy() is None
    clock.t = 25
    assert status.unhealthy() == "no microphone frame for 14 s"
    status.set_state(KioskState.NO_DEVICE, "input 'USB' unplugged")
    status.set_device("input", "USB", False)
    assert status.unhealthy() is None  # handled by the kiosk: reopening with backoff
    snap = status.snapshot()
    assert snap["healthy"] and snap["state"] == "no_device" and snap["state_reason"] == "input 'USB' unplugged"
    clock.t = 100  # reopened 75 s later: a fresh grace period, then the same rule
    status.set_device("input", "USB", True)
    status.set_state(KioskState.IDLE)
    assert status.unhealthy() is None
    clock.t = 111
    assert status.unhealthy() == "no microphone frame for 11 s"


def test_errors_are_one_line() -> None:
    status = KioskStatus()
    status.on_error("ConnectError: cannot reach the token server\ntraceback...")
    assert status.snapshot()["last_error"] == "ConnectError: cannot reach the token server"
    assert samples(status)[("bridge_kiosk_errors_total", ())] == 1
