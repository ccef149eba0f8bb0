"""The link seam: everything the session runtime needs from a connection to the model.

Like httpx's transport: the runtime takes a ``RealtimeLink``; tests may pass a scripted one.
"""

from __future__ import annotations

import abc
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar


@dataclass
class ConnectTimings:
    """Milliseconds spent in each connection step (logged at -v, written to the transcript)."""

    steps: dict[str, float] = field(default_factory=dict)
    _t0: float = field(default_factory=time.perf_counter)
    _last: float = field(default_factory=time.perf_counter)

    def mark(self, step: str) -> float:
        now = time.perf_counter()
        self.steps[step] = round((now - self._last) * 1000, 1)
        self._last = now
        return self.steps[step]

    @property
    def total_ms(self) -> float:
        return round((self._last - self._t0) * 1000, 1)


class RealtimeLink(abc.ABC):
    """A live Realtime session: events in both directions, audio handled by the transport."""

    transport: ClassVar[str]
    call_id: str | None = None

    @abc.abstractmethod
    async def connect(self) -> ConnectTimings:
        """Open the connection; raise AuthError / ConnectError with one clear line on failure."""

    @abc.abstractmethod
    async def send(self, event: dict[str, Any]) -> None:
        """Send one client event."""

    @abc.abstractmethod
    async def recv(self) -> dict[str, Any] | None:
        """The next server event, or None once the connection has closed."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Hang up and release everything; idempotent."""
