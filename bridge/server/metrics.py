"""``GET /metrics``: Prometheus text from ``prometheus-client``, one registry per app (no module globals).

Counters are this replica's; sum them over replicas in Prometheus (``sum by (reason) (rate(...))``).
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

CONTENT_TYPE = CONTENT_TYPE_LATEST
# Upstream requests (mint, call creation, hangup) take ~0.05-2 s against the real API.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.mints = Counter("bridge_mints", "Ephemeral keys minted", registry=r)
        self.refusals = Counter("bridge_refusals", "Requests refused by the limits, by reason", ["reason"], registry=r)
        self.calls_active = Gauge("bridge_calls_active", "Agent calls whose sideband runs on this replica", registry=r)
        self.calls = Counter("bridge_calls", "Agent calls created by this replica", registry=r)
        self.takeovers = Counter(
            "bridge_takeovers", "Calls this replica took over (orphan: owner died; handover: owner left)", ["kind"],
            registry=r,
        )  # fmt: skip
        self.sideband_errors = Counter("bridge_sideband_errors", "Sidebands that ended with an error", registry=r)
        self.store_errors = Counter("bridge_store_errors", "Times the shared store (Redis) did not answer", registry=r)
        self.upstream = Histogram(
            "bridge_upstream_seconds", "Upstream Realtime API request time", ["op"], buckets=LATENCY_BUCKETS,
            registry=r,
        )  # fmt: skip

    def render(self) -> bytes:
        return generate_latest(self.registry)
