"""The WebRTC downlink policy on a virtual clock (bridge.bench.downlink): real receiver and playout, the lab's
network profiles, no CPU noise. The NetEq-like policy must play without gaps and without paying for it."""

from __future__ import annotations

import pytest

from bridge.bench.downlink import simulate
from bridge.bench.profiles import PROFILES

SECONDS = 20.0


@pytest.mark.parametrize("name", ["wifi", "lossy", "mobile", "cell-edge"])
def test_no_gaps_and_no_more_latency_than_the_stepped_margin(name: str) -> None:
    steps = simulate(PROFILES[name], "steps", SECONDS, seed=2).row()
    neteq = simulate(PROFILES[name], "neteq", SECONDS, seed=2).row()
    assert steps["gaps_per_min"] > 10  # the old margin really did leave holes here
    assert neteq["gaps_per_min"] == 0
    assert neteq["client_p50_ms"] <= steps["client_p50_ms"]
    assert neteq["e2e_p95_ms"] <= steps["e2e_p95_ms"]


def test_clean_network_keeps_the_margin_small() -> None:
    r = simulate(PROFILES["clean"], "neteq", SECONDS, seed=1).row()
    assert r["gaps_per_min"] == 0 and r["client_p95_ms"] <= 12 and r["final_target_ms"] <= 7


def test_loss_without_jitter_costs_no_latency_unless_fec_is_waited_for() -> None:
    plc = simulate(PROFILES["lossy"], "neteq", SECONDS, seed=3).row()
    fec = simulate(PROFILES["lossy"], "neteq-fec", SECONDS, seed=3).row()
    assert plc["client_p50_ms"] <= 12 and plc["gaps_per_min"] == 0
    assert fec["fec_per_min"] > 0.5 * fec["concealed_per_min"]  # waiting for the next packet buys its FEC ...
    assert fec["client_p50_ms"] >= plc["client_p50_ms"] + 15  # ... for about a frame of latency
