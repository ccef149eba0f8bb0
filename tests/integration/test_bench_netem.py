"""The lab's impairment really happens on the wire: RTT and loss through the forwarder match the profile.

All traffic stays inside the namespaces the topology creates (10.77.0.0/24 exists nowhere else).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import numpy as np
import pytest

from bridge.bench.netem import Topology, cleanup_stale, netns_unavailable_reason
from bridge.bench.profiles import PROFILES, Profile

REASON = netns_unavailable_reason()
# rates, delays and loss are measured against the profile: alone
pytestmark = [
    pytest.mark.serial,
    pytest.mark.netns,
    pytest.mark.timeout(90),
    pytest.mark.skipif(REASON is not None, reason=REASON or ""),
]


def _namespaces() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def topo() -> Iterator[Topology]:
    with Topology(PROFILES["clean"], lifetime_s=120, seed=7) as t:
        yield t
    assert not any(ns in _namespaces() for ns in t.ns.values()), "namespaces left behind"


def test_clean_path_adds_almost_nothing(topo: Topology) -> None:
    topo.set_profile(PROFILES["clean"])
    m = topo.measure(udp_count=100, interval=0.005, tcp_count=10)
    udp, tcp = m["udp"], m["tcp"]
    assert udp["received"] == udp["sent"] == 100
    assert np.median(udp["rtt_ms"]) < 5
    assert np.median(tcp["rtt_ms"]) < 5


def test_delay_and_jitter_match_the_profile(topo: Topology) -> None:
    topo.set_profile(Profile("d", delay_ms=25, jitter_ms=10))
    m = topo.measure(udp_count=150, interval=0.01, tcp_count=10)
    rtts = np.array(m["udp"]["rtt_ms"])
    assert m["udp"]["received"] == 150
    # two one-way delays of 25 +- 10 ms; keeping order can only push a frame later, never earlier
    assert rtts.min() >= 30
    assert 45 <= np.median(rtts) <= 65
    assert rtts.max() <= 110  # 2 x 35 ms plus scheduling on a busy 2-core machine
    assert rtts.std() > 2  # the jitter is really there
    tcp = m["tcp"]
    assert 45 <= np.median(tcp["rtt_ms"]) <= 80  # TCP sees the same path
    assert tcp["connect_ms"] >= 30


def test_no_reordering_unless_asked(topo: Topology) -> None:
    topo.set_profile(Profile("j", delay_ms=20, jitter_ms=15))
    m = topo.measure(udp_count=100, interval=0.002, tcp_count=1)
    # 2 ms apart with +-15 ms jitter: without the ordering rule most replies would overtake each other
    order = m["udp"]["order"]
    assert len(order) == 100
    assert order == sorted(order)


def test_loss_rate_is_roughly_right(topo: Topology) -> None:
    topo.set_profile(Profile("l", loss=0.10))
    m = topo.measure(udp_count=400, interval=0.002, tcp_count=10)
    lost = 1 - m["udp"]["received"] / m["udp"]["sent"]
    # a round trip survives both directions: 1 - 0.9^2 = 19 %; 400 packets -> sd ~2 %
    assert 0.12 <= lost <= 0.27
    assert m["tcp"]["received"] == 10  # TCP recovers from the loss


def test_forwarder_counts_what_it_dropped(topo: Topology) -> None:
    topo.set_profile(Profile("l2", loss=0.5))
    topo.measure(udp_count=100, interval=0.002, tcp_count=0)
    topo.set_profile(PROFILES["clean"])  # stopping the forwarder collects its counters
    c = topo.last_counts
    assert set(c) == {"mc->ms", "ms->mc"}
    up = c["mc->ms"]
    assert up["in"] >= 100
    assert 0.3 <= up["lost"] / up["in"] <= 0.7
    assert up["sent"] + up["lost"] + up["overflow"] == up["in"]


def test_stale_namespaces_are_removed() -> None:
    dead = 2**22 + 12345  # above pid_max on this kernel's default: certainly not running
    name = f"brbench{dead}-cli"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        assert name in cleanup_stale()
        assert name not in _namespaces()
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def test_bottleneck_rate_and_queue_on_the_wire(topo: Topology) -> None:
    """Bursts through a 400/1000 kbit/s bottleneck with a 300 ms drop-tail queue: each direction drains at
    its rate (within 5 %), a full queue drops the rest of the burst, and none waits longer than the queue."""
    topo.set_profile(Profile("b", up_kbps=400, down_kbps=1000, queue_ms=300))
    m = topo.measure(udp_count=10, interval=0.01, tcp_count=0, rate=True)
    up, down = m["rate_up"], m["rate_down"]
    assert up["kbps"] == pytest.approx(400, rel=0.05)
    assert down["kbps"] == pytest.approx(1000, rel=0.05)
    for r, kbps in ((up, 400), (down, 1000)):
        assert r["received"] < r["sent"]  # 150 kB at once do not fit a 300 ms queue
        assert r["drain_ms"] <= 300 + 1042 * 8 / kbps + 15  # + one frame's serialisation, + scheduling
    topo.set_profile(PROFILES["clean"])
    c = topo.last_counts
    assert c["mc->ms"]["queue_dropped"] > 0 and c["ms->mc"]["queue_dropped"] > 0
    assert c["mc->ms"]["queue_max_wait_ms"] <= 305
