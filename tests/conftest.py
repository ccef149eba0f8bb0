"""Shared pytest setup.

In CI (``CI=true``) a skipped test is a failure: every suite must run there (PulseAudio, Chromium,
network namespaces, the official spec in ../shared are all installed or present by ``.ci/run``).
"""

from __future__ import annotations

import os

import pytest

_skipped: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes") and _skipped:
        print(f"\nCI: {len(_skipped)} test(s) skipped; every suite must run in CI:")
        for nodeid in _skipped:
            print(f"  skipped: {nodeid}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
