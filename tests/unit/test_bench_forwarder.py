"""The forwarder's bottleneck (token bucket + drop-tail queue) and cross traffic, on a virtual clock."""

from __future__ import annotations

import random

import numpy as np
import pytest

from bridge.bench.forwarder import Bottleneck, CrossTraffic, Impairment, bottlenecks, cross_targets
from bridge.bench.profiles import PROFILES, Profile
from bridge.errors import ConfigError


def offer_stream(link: Bottleneck, kbps: float, seconds: float, size: int, jitter: float = 0.0) -> list[tuple]:
    """Frames of ``size`` bytes offered at ``kbps`` on average; (arrival, departure or None) per frame."""
    rng = random.Random(5)
    gap = size * 8 / (kbps * 1000)
    t, out = 0.0, []
    while t < seconds:
        out.append((t, link.offer(t, size)))
        t += gap * (1 + rng.uniform(-jitter, jitter))
    return out


@pytest.mark.parametrize("kbps", [400, 1000, 2000])
def test_rate_is_within_5_percent(kbps: float) -> None:
    link = Bottleneck(kbps, queue_ms=300)
    frames = offer_stream(link, kbps * 2, 10.0, 1200, jitter=0.5)  # twice what the link carries
    departures = sorted(d for _, d in frames if d is not None)
    sent = len(departures) - 1  # bytes between the first and the last departure
    rate = sent * 1200 * 8 / (departures[-1] - departures[0]) / 1000
    assert rate == pytest.approx(kbps, rel=0.05)


def test_queue_delay_is_bounded_by_its_depth() -> None:
    link = Bottleneck(1000, queue_ms=300)
    frames = offer_stream(link, 3000, 5.0, 1500)
    waits = [d - a for a, d in frames if d is not None]
    serialise = 1500 * 8 / 1_000_000
    assert max(waits) <= 0.300 + serialise + 1e-9
    assert max(waits) >= 0.300 - 2 * serialise  # and a standing overload really fills it
    assert link.max_wait == pytest.approx(max(waits))


def test_drops_only_when_full() -> None:
    under = Bottleneck(1000, queue_ms=100)
    frames = offer_stream(under, 800, 5.0, 1000, jitter=0.3)
    assert all(d is not None for _, d in frames) and under.counts["dropped"] == 0
    over = Bottleneck(1000, queue_ms=100)
    frames = offer_stream(over, 2000, 5.0, 1000)
    dropped = sum(d is None for _, d in frames)
    assert dropped == over.counts["dropped"]
    assert 0.4 <= dropped / len(frames) <= 0.55  # half the offered load cannot fit through the link
    # a dropped frame found the queue full: what was waiting plus it would pass the limit
    fresh = Bottleneck(1000, queue_ms=100)
    t = 0.0
    while fresh.offer(t, 1000) is not None:
        pass
    assert fresh.queued_bytes(t) + 1000 > fresh.limit


def test_an_idle_link_sends_a_frame_at_once_and_a_burst_at_the_rate() -> None:
    link = Bottleneck(1000, queue_ms=200)
    assert link.offer(1.0, 1000) == pytest.approx(1.0)  # the bucket holds one full frame
    departures = [link.offer(1.0, 1000) for _ in range(5)]
    gaps = np.diff([1.0, *[d for d in departures if d is not None]])
    assert gaps[0] == pytest.approx((1000 - 514) * 8 / 1_000_000)  # what the bucket had left, then
    assert np.allclose(gaps[1:], 1000 * 8 / 1_000_000)  # one frame per serialisation time


def test_cross_traffic_is_on_off_at_its_rate() -> None:
    cross = CrossTraffic(3000, on_ms=600, period_ms=2500, start=0.0)
    times = cross.until(10.0)
    per_period = [sum(1 for t in times if k * 2.5 <= t < (k + 1) * 2.5) for k in range(4)]
    expected = 0.6 / (1514 * 8 / 3_000_000)
    assert all(abs(n - expected) <= 1 for n in per_period)
    assert all((t % 2.5) < 0.6 for t in times)  # nothing in the off time
    assert cross.until(10.0) == []  # nothing twice
    assert times == sorted(times)


def test_shared_channel_is_one_bottleneck_and_cross_traffic_goes_into_it() -> None:
    up, down = bottlenecks(PROFILES["congested-wifi"])
    assert up is down and up is not None and up.rate == 2_000_000 / 8
    assert cross_targets(PROFILES["congested-wifi"], up, down) == [up]
    up2, down2 = bottlenecks(PROFILES["cell-edge"])
    assert up2 is not None and down2 is not None and up2 is not down2
    assert (up2.rate, down2.rate) == (400_000 / 8, 1_000_000 / 8)
    assert up2.limit == int(400_000 / 8 * 0.3)  # 300 ms of the rate
    assert bottlenecks(PROFILES["wifi"]) == (None, None)


def test_cross_traffic_fills_the_queue_of_a_shared_link() -> None:
    link = Bottleneck(2000, queue_ms=150)
    cross = CrossTraffic(3000, on_ms=600, period_ms=2500, start=0.0)
    waits = []
    for k in range(250):  # a 20 ms voice packet stream for 5 s
        t = k * 0.020
        for c in cross.until(t):
            link.offer(c, cross.size)
        d = link.offer(t, 200)
        if d is not None:
            waits.append((t, d - t))
    in_burst = [w for t, w in waits if 0.4 <= t % 2.5 < 0.6]
    quiet = [w for t, w in waits if 1.2 <= t % 2.5 < 2.4]
    assert min(in_burst) > 0.100  # the burst's standing queue delays the voice packets
    assert max(quiet) < 0.005  # and the link is idle between bursts


def test_loss_and_delay_split() -> None:
    imp = Impairment(Profile("x", delay_ms=50, jitter_ms=0, loss=0.25), random.Random(2))
    lost = sum(imp.lost() for _ in range(4000))
    assert 0.22 <= lost / 4000 <= 0.28
    assert imp.delayed(1.0, 0.0) == pytest.approx(1.05)
    assert imp.delayed(1.0, 2.0) == 2.0  # never before the frame ahead


def test_profile_validation() -> None:
    with pytest.raises(ConfigError):
        Profile("bad", cross_kbps=100, cross_on_ms=10, cross_period_ms=20)  # nothing to cross
    with pytest.raises(ConfigError):
        Profile("bad", up_kbps=100, down_kbps=200, shared=True)
    with pytest.raises(ConfigError):
        Profile("bad", up_kbps=100, cross_kbps=100, cross_on_ms=30, cross_period_ms=20)
    assert "400 kbit/s up, 1000 kbit/s down, 300 ms queue" in PROFILES["cell-edge"].describe()
    assert "shared" in PROFILES["congested-wifi"].describe()
