"""``python -m bridge.bench.wakeups``: the CPU a wake-up costs, and PortAudio's own floor per block size."""

from __future__ import annotations

import time

import pytest

from bridge.bench import wakeups

try:
    from tests.pulse import Pulse, pulse  # noqa: F401
except ModuleNotFoundError:  # plain `pytest` puts tests/ (the conftest's dir), not the repo, on sys.path
    from pulse import Pulse, pulse  # type: ignore[no-redef]  # noqa: F401


def test_each_way_of_waking_is_paced_and_measured() -> None:
    t0 = time.monotonic()
    rows = dict(wakeups.measure(rate=100, seconds=0.3))
    assert {"thread, time.sleep", "uvloop task, asyncio.sleep", "asyncio timer callback"} <= set(rows)
    assert time.monotonic() - t0 >= 0.3 * len(rows) - 0.05  # really paced, not a busy loop
    assert all(0 < cpu < 100 for cpu in rows.values())


@pytest.mark.pulseaudio
@pytest.mark.timeout(120)
def test_device_floor_opens_real_streams_at_each_block_size(pulse: Pulse) -> None:  # noqa: F811
    rows = wakeups.device_floor(0.5, env=pulse.env())
    assert [(o, i) for o, i, *_ in rows] == list(wakeups.DEVICE_BLOCKS_MS)
    for out_ms, in_ms, cpu, out_lat, in_lat in rows:
        assert 0 < cpu < 100
        assert out_lat >= out_ms and in_lat >= in_ms  # PortAudio buffers at least one block
