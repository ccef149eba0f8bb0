"""Network profiles of the latency lab, defined in one place (issues #6 and #18).

Delay, jitter and loss apply to each direction separately: ``wifi`` adds 20 ms +- 15 ms and drops 0.5 %
of the frames going client -> server, and the same again server -> client. Jitter is uniform in
``[delay - jitter, delay + jitter]`` (clipped at 0); frames keep their order unless ``reorder`` is set
(a frame is never sent before the one ahead of it), which is how a real access link queues.

A profile can also have a bottleneck (issue #18): a token-bucket rate per direction (``up_kbps`` client
-> server, ``down_kbps`` server -> client) in front of a drop-tail queue ``queue_ms`` deep (its size in
bytes is what the rate sends in that time), or one bucket and one queue shared by both directions
(``shared``: a Wi-Fi channel is half duplex, up and down take turns on the same air). And cross traffic:
a second flow the forwarder injects into the bottleneck (``cross_kbps`` while on, ``cross_on_ms`` out
of every ``cross_period_ms``, in ``cross_dir``), which takes capacity and queue space and goes nowhere.
The order of things on a frame's way: bottleneck (queue, then serialisation at the rate), loss,
propagation delay with jitter. The docs' profile table (docs/benchmarks.md) says what real network each
profile stands for and where its numbers come from.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from bridge.errors import ConfigError

Direction = Literal["up", "down", "both"]


@dataclass(frozen=True)
class Profile:
    name: str
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss: float = 0.0  # fraction of frames dropped, per direction
    reorder: bool = False
    up_kbps: float | None = None  # bottleneck rate client -> server (None: no limit)
    down_kbps: float | None = None  # bottleneck rate server -> client
    shared: bool = False  # one bucket and one queue for both directions (rate = up_kbps)
    queue_ms: float = 100.0  # drop-tail queue depth, in ms of the bottleneck's rate
    cross_kbps: float = 0.0  # injected cross traffic while on
    cross_on_ms: float = 0.0
    cross_period_ms: float = 0.0
    cross_dir: Direction = "down"

    def __post_init__(self) -> None:
        if self.shared and (self.up_kbps is None or self.down_kbps not in (None, self.up_kbps)):
            raise ConfigError(f"profile {self.name!r}: a shared bottleneck has one rate (up_kbps)")
        if self.cross_kbps and not self.limited:
            raise ConfigError(f"profile {self.name!r}: cross traffic needs a bottleneck to cross")
        if self.cross_kbps and not 0 < self.cross_on_ms <= self.cross_period_ms:
            raise ConfigError(f"profile {self.name!r}: cross traffic needs 0 < cross_on_ms <= cross_period_ms")

    @property
    def limited(self) -> bool:
        return self.up_kbps is not None or self.down_kbps is not None

    @property
    def impaired(self) -> bool:
        return self.delay_ms > 0 or self.jitter_ms > 0 or self.loss > 0 or self.limited

    def describe(self) -> str:
        if not self.impaired:
            return "no impairment"
        jitter = f" +- {self.jitter_ms:g} ms" if self.jitter_ms else ""
        parts = [f"{self.delay_ms:g} ms{jitter}, {self.loss * 100:g} % loss each way"]
        if self.shared:
            parts.append(f"{self.up_kbps:g} kbit/s shared, {self.queue_ms:g} ms queue")
        elif self.limited:
            up = f"{self.up_kbps:g}" if self.up_kbps else "-"
            down = f"{self.down_kbps:g}" if self.down_kbps else "-"
            parts.append(f"{up} kbit/s up, {down} kbit/s down, {self.queue_ms:g} ms queue")
        if self.cross_kbps:
            parts.append(
                f"cross traffic {self.cross_kbps:g} kbit/s {self.cross_dir}"
                f" {self.cross_on_ms:g} ms of every {self.cross_period_ms:g} ms"
            )
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Profile:
        return cls(**d)


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile("clean"),
        Profile("wifi", delay_ms=20, jitter_ms=15, loss=0.005),
        Profile("lossy", delay_ms=50, loss=0.02),
        Profile("mobile", delay_ms=80, jitter_ms=40, loss=0.03),
        Profile("cell-edge", delay_ms=40, jitter_ms=10, loss=0.01, up_kbps=400, down_kbps=1000, queue_ms=300),
        Profile(
            "congested-wifi",
            delay_ms=10,
            jitter_ms=5,
            loss=0.005,
            up_kbps=2000,
            shared=True,
            queue_ms=150,
            cross_kbps=3000,
            cross_on_ms=600,
            cross_period_ms=2500,
            cross_dir="down",
        ),
    )
}


def parse_profiles(spec: str) -> list[Profile]:
    """``"clean,wifi"`` -> profiles, in the given order; unknown names are a one-line error."""
    names = [n.strip() for n in spec.split(",") if n.strip()]
    if not names:
        raise ConfigError("--profiles is empty")
    unknown = [n for n in names if n not in PROFILES]
    if unknown:
        raise ConfigError(f"unknown profile {unknown[0]!r}; known: {', '.join(PROFILES)}")
    return [PROFILES[n] for n in names]
