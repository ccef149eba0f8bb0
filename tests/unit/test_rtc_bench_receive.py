"""Smoke test of the receive-path benchmark (the real run is `python -m bridge.bench.receive --long`)."""

from __future__ import annotations

from bridge.bench import receive


async def test_benchmark_runs_and_ours_beats_stock() -> None:
    out = await receive.run(2.0, seed=3, scenarios=(receive.Scenario("clean"), receive.Scenario("loss", 0.05)))
    lines = [line for line in out.splitlines() if line.startswith("| clean") or line.startswith("| loss")]
    assert len(lines) == 4
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    p50 = {(c[0], c[1].split()[0]): float(c[5]) for c in cells}
    assert p50[("clean", "bridge.rtc.AudioReceiver")] < 10.0
    assert p50[("clean", "aiortc")] > 60.0  # prefetch=4: ~80 ms
