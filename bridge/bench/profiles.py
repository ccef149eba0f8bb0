"""Network profiles of the latency lab, defined in one place (issue #6).

Each value applies to each direction separately: ``wifi`` adds 20 ms +- 15 ms and drops 0.5 % of the
frames going client -> server, and the same again server -> client. Jitter is uniform in
``[delay - jitter, delay + jitter]`` (clipped at 0); frames keep their order unless ``reorder`` is set
(a frame is never sent before the one ahead of it), which is how a real access link queues.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from bridge.errors import ConfigError


@dataclass(frozen=True)
class Profile:
    name: str
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss: float = 0.0  # fraction of frames dropped, per direction
    reorder: bool = False

    @property
    def impaired(self) -> bool:
        return self.delay_ms > 0 or self.jitter_ms > 0 or self.loss > 0

    def describe(self) -> str:
        if not self.impaired:
            return "no impairment"
        jitter = f" +- {self.jitter_ms:g} ms" if self.jitter_ms else ""
        return f"{self.delay_ms:g} ms{jitter}, {self.loss * 100:g} % loss each way"

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
