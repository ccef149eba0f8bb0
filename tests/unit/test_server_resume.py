"""``X-Resume-Call`` bookkeeping: the ended calls' active agents, bounded by count and age, and who may
resume which call (bridge.server.resume)."""

from __future__ import annotations

import time

import pytest

from bridge.server.resume import RecentCalls, may_resume


def test_recent_calls_are_bounded_by_count() -> None:
    recent = RecentCalls(limit=3)
    for n in range(5):
        recent.remember(f"rtc_{n}", f"agent{n}", None)
    assert len(recent) == 3
    assert recent.get("rtc_0") is None and recent.get("rtc_1") is None
    ended = recent.get("rtc_4")
    assert ended is not None and ended.agent == "agent4"


def test_recent_calls_are_forgotten_after_their_age(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    recent = RecentCalls(keep_s=60)
    recent.remember("rtc_old", "triage", None)
    now[0] += 30
    recent.remember("rtc_new", "empathetic", "shop-1")
    now[0] += 45  # the first is 75 s old, the second 45 s
    assert recent.get("rtc_old") is None
    new = recent.get("rtc_new")
    assert new is not None and new.kiosk == "shop-1" and len(recent) == 1


def test_only_the_same_identity_may_resume() -> None:
    assert may_resume(None, None) and may_resume("shop-1", "shop-1")
    assert not may_resume("shop-1", None) and not may_resume(None, "shop-1") and not may_resume("shop-1", "shop-2")
