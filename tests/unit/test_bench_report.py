"""Lab plumbing that needs no network: profiles, the forwarder's scheduling, CLI validation, reports."""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import pytest

from bridge.bench import report
from bridge.bench.cli import main, settings_from_args
from bridge.bench.forwarder import Impairment
from bridge.bench.lab import Cell
from bridge.bench.profiles import PROFILES, Profile, parse_profiles
from bridge.errors import ConfigError


def test_profiles_are_the_issue_s() -> None:
    assert PROFILES["wifi"] == Profile("wifi", 20, 15, 0.005)
    assert PROFILES["lossy"] == Profile("lossy", 50, 0, 0.02)
    assert PROFILES["mobile"] == Profile("mobile", 80, 40, 0.03)
    assert not PROFILES["clean"].impaired
    assert [p.name for p in parse_profiles("mobile, clean")] == ["mobile", "clean"]
    with pytest.raises(ConfigError, match="unknown profile"):
        parse_profiles("clean,lan")


def test_impairment_delay_jitter_order_and_loss() -> None:
    imp = Impairment(Profile("x", delay_ms=50, jitter_ms=20, loss=0.1), random.Random(3))
    last, dues, lost = 0.0, [], 0
    for i in range(5000):
        now = i * 0.001
        due = imp.due(now, last)
        if due is None:
            lost += 1
            continue
        assert due >= last  # never reordered
        assert due - now >= 0.030 - 1e-9
        last = due
        dues.append(due - now)
    assert 0.08 < lost / 5000 < 0.12
    assert 0.045 < sorted(dues)[len(dues) // 2] < 0.070


def test_impairment_may_reorder_when_asked() -> None:
    imp = Impairment(Profile("r", delay_ms=20, jitter_ms=15, reorder=True), random.Random(1))
    dues = [imp.due(i * 0.001, 0.0) for i in range(200)]
    assert any(b < a for a, b in zip(dues, dues[1:], strict=False))


def _args(**kw: object) -> argparse.Namespace:
    base = {"transports": "webrtc,ws", "profiles": "clean", "trials": 20, "out": "out", "live": False, "verbose": 0}
    return argparse.Namespace(**{**base, **kw})


def test_cli_validation() -> None:
    s = settings_from_args(_args(transports="ws", profiles="clean,wifi"))
    assert s.transports == ["ws"] and [p.name for p in s.profiles] == ["clean", "wifi"]
    with pytest.raises(ConfigError, match="--transports"):
        settings_from_args(_args(transports="webrtc,sip"))
    with pytest.raises(ConfigError, match="--trials"):
        settings_from_args(_args(trials=1))


def test_live_refuses_without_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("CI", raising=False)  # in CI the live run refuses for that reason first
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        main(_args(live=True))


def _doc() -> dict:
    cells = []
    for transport, base in (("webrtc", 60.0), ("ws", 30.0), ("stock", 120.0)):
        c = Cell(transport, "clean")
        c.trials.round_trip_ms = [base + i for i in range(20)]
        if transport != "stock":
            c.trials.response_ms = [550.0 + i for i in range(20)]
            c.trials.response_net_ms = [50.0 + i for i in range(20)]
            c.trials.bargein_stop_ms = [40.0 + i for i in range(19)]
            c.trials.truncation_error_ms = [-5.0, 10.0, 20.0]
            c.trials.reported = {"response_ms": [760.0], "bargein_ms": [45.0]}
            c.cpu_pct, c.rss_mb = [9.5], [95.0]
        c.trials.audio_s, c.trials.gaps = 60.0, 2
        cells.append(c.to_dict())
    settings = {"profiles": ["clean"], "think_ms": 200, "trials": 20}
    return report.results(cells, command="bridge bench --trials 20", settings=settings, paths={}, notes=["n1"])


def test_reports_render(tmp_path: Path) -> None:
    doc = _doc()
    text = report.table(doc)
    assert "70 / 78 / 79" in text  # webrtc round trip p50 / p95 / max
    assert "note: n1" in text
    md = report.markdown(doc)
    assert "| clean | ws | 40 / 48 / 49 | 60 / 68 / 69 | 49 / 57 / 58 |" in md
    assert "| clean | webrtc | 760 | 760 |" in md  # black box (+ think) next to the bridge's own line
    assert doc["machine"]["nproc"] >= 1 and doc["machine"]["aiortc"]
    paths = report.write_all(doc, tmp_path)
    assert paths["round_trip_cdf"].stat().st_size > 1000
    assert (tmp_path / "results.json").is_file()
