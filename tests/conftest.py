"""Shared pytest setup.

In CI (``CI=true``) a skipped test is a failure: every suite must run there (PulseAudio, Chromium,
network namespaces, the official spec in ../shared are all installed or present by ``.ci/run``).
"""

from __future__ import annotations

import os
import tempfile

import pytest

_skipped: list[str] = []


def pytest_configure(config: pytest.Config) -> None:
    # state a run keeps between runs (the echo canceller's measured delay per device pair) goes to a fresh
    # directory, not the developer's ~/.local/state; every `bridge` the tests start inherits it
    os.environ["XDG_STATE_HOME"] = tempfile.mkdtemp(prefix="bridge-test-state-")


_ALONE = ("pulseaudio", "browser")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # what must run alone is "serial" (scripts/test.sh runs those one at a time, the rest on two workers):
    # the PulseAudio devices are one shared room, Chromium loads both cores (the lab's namespaces are per
    # process: a lab test that measures finely says serial itself)
    for item in items:
        if any(item.get_closest_marker(name) for name in _ALONE):
            item.add_marker(pytest.mark.serial)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes") and _skipped:
        print(f"\nCI: {len(_skipped)} test(s) skipped; every suite must run in CI:")
        for nodeid in _skipped:
            print(f"  skipped: {nodeid}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
