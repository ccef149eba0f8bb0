"""The resilience bench in quick mode (CI): ``python -m bridge.bench.resilience`` with tiny counts, both
transports at once, on the clean profile (in the lab's namespaces as root, else on 127.0.0.1), and its real
results: every fault reconnected, noticed within 3 s, nothing lost, the context there after each reconnect,
a renewal without downtime, and the ``bridge run`` processes alive until stopped and exiting 0."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.timeout(150)

ROOT = Path(__file__).resolve().parents[2]


def run_bench(tmp: Path) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    argv = [sys.executable, "-m", "bridge.bench.resilience", "--profiles", "clean", "--jobs", "2"]
    argv += ["--drops", "1", "--stalls", "1", "--faults", "5", "--renewals", "1", "--session-cap", "15"]
    argv += ["--dir", str(tmp / "raw"), "--out", str(tmp / "r.json")]
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=140)
    doc = json.loads((tmp / "r.json").read_text()) if (tmp / "r.json").is_file() else {}
    return proc, doc


def test_quick_mode_measures_reconnects_and_loses_nothing(tmp_path: Path) -> None:
    proc, doc = run_bench(tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "### Reconnect" in proc.stdout and "### Mixed faults" in proc.stdout and "### Renewal" in proc.stdout
    assert doc["failures"] == []

    assert sorted(r["transport"] for r in doc["reconnect"]) == ["webrtc", "ws"]
    for r in doc["reconnect"]:
        drop, stall = r["drop"], r["stall"]
        assert drop["injected"] == drop["reconnected"] == 1, r
        assert stall["injected"] == stall["reconnected"] == 1, r
        assert stall["reasons"] == ["silent"], r
        for x in r["raw"]["drop"] + r["raw"]["stall"]:
            assert 0 <= x["detection_ms"] <= 3000, x  # noticed within 3 s, never before the fault
            assert x["reconnect_ms"] > 0
        assert r["stats_reconnects"] == 2 and r["exit_code"] == 0

    for r in doc["mixed"]:
        tr = r["transcript"]
        assert r["faults"]["injected"] == r["faults"]["reconnected"] == 5, r
        assert tr["invalid"] == tr["unknown_kind"] == tr["out_of_order"] == tr["duplicates"] == 0, tr
        assert tr["ends_with_stats"] and tr["kinds"]["reconnect"] == 5
        assert r["lost_user_turns"]["checked"] >= 5 and r["lost_user_turns"]["missing"] == 0, r["lost_user_turns"]
        ctx = r["context"]
        # each first reply after a fault quotes a turn from before it (unless the next turn cut it short)
        assert ctx["reconnects"] == 5 and ctx["present"] == 5 - ctx["interrupted"] >= 3, ctx
        assert r["alive_until_stopped"] and r["exit_code"] == 0 and r["internal_errors"] == 0
        assert all(0 <= x["detection_ms"] <= 3000 for x in r["raw"]), r["raw"]

    for r in doc["renewal"]:
        assert r["renewals"] >= 1 and r["renewal_downtime_ms"] == [0.0], r
        assert r["expired_errors"] == 0 and r["other_reconnects"] == []
        assert r["response_after_renewal_ms"]["n"] >= 1 and r["response_other_ms"]["n"] >= 1
