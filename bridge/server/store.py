"""Where ``bridge serve`` keeps what replicas must share: limits, the call registry, kiosks and usage.

ONE interface, :class:`Store`, two implementations side by side:

- :class:`MemoryStore` (this module): one process, no Redis; today's single-machine behaviour;
- :class:`bridge.server.redis_store.RedisStore` (``--redis-url``): every operation that must be atomic
  across replicas is one Lua script in Redis, never a read-modify-write from Python.

A store raises :class:`StoreUnavailable` when it cannot answer; the app turns that into a 503 with
``Retry-After`` (a replica that cannot reach Redis never mints unlimited keys).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

from bridge.errors import ConnectError
from bridge.server.security import RateLimiter
from bridge.server.usage import TokenUsage

Kind = Literal["mint", "call"]
CallState = Literal["live", "handover", "taking_over", "ended"]
SECONDS_PER_DAY = 86_400


class StoreUnavailable(ConnectError):
    """The shared store (Redis) did not answer; nothing was decided."""


@dataclass(frozen=True)
class AdmitRequest:
    """One mint or call request after the local checks (origin, size, shared access token)."""

    kind: Kind
    client: str  # the per-client bucket's key (address)
    credential: str | None  # "shared" for the shared access token; None = anonymous or a kiosk token
    token_hash: str | None  # sha256 hex of a bearer token that may be a kiosk's
    reservation: str | None = None  # calls: the id of the slot to reserve
    anonymous_ok: bool = True  # an unknown bearer token counts as anonymous (else: 401)


@dataclass(frozen=True)
class Admitted:
    kiosk: str | None  # the kiosk's name when a per-kiosk token was used


@dataclass(frozen=True)
class Refusal:
    """A request the limits refuse: ``code`` is the JSON error code and the metrics' reason label."""

    status: int
    code: str
    message: str
    retry_after: int | None = None

    @property
    def headers(self) -> dict[str, str]:
        if self.status == 401:
            return {"WWW-Authenticate": 'Bearer realm="bridge"'}
        return {"Retry-After": str(self.retry_after)} if self.retry_after is not None else {}


Verdict = Admitted | Refusal


@dataclass(frozen=True)
class CallRecord:
    """One agent call as the registry knows it."""

    call_id: str
    owner: str
    agent: str
    created: float  # epoch seconds
    kiosk: str | None = None
    state: CallState = "live"
    model: str = ""
    released: float = 0.0  # epoch seconds of the last graceful release (0: never)


@dataclass(frozen=True)
class Beat:
    """One owned call's heartbeat: keep the lock, add the token usage seen since the last beat."""

    call_id: str
    token: str
    usage: TokenUsage = field(default_factory=TokenUsage)
    cost_micro_usd: int = 0


class Store(Protocol):
    """What the server needs from shared state. ``shared``: other replicas see it (Redis)."""

    shared: bool

    async def ping(self) -> None: ...
    async def admit(self, req: AdmitRequest) -> Verdict: ...
    async def whois(self, token_hash: str) -> str | None: ...
    async def refund_mint(self, kiosk: str | None) -> None: ...
    async def cancel(self, reservation: str, kiosk: str | None) -> None: ...
    async def register(self, record: CallRecord, reservation: str, token: str) -> None: ...
    async def heartbeat(self, beats: list[Beat]) -> list[bool]: ...
    async def end(
        self, call_id: str, token: str | None, *, count: bool = True, usage: TokenUsage | None = None, cost: int = 0
    ) -> bool: ...
    async def get(self, call_id: str) -> CallRecord | None: ...
    async def claim_tool_call(self, call_id: str, tool_call_id: str) -> tuple[bool, str | None]: ...
    async def set_agent(self, call_id: str, tool_call_id: str, agent: str) -> None: ...
    async def release(self, call_id: str, token: str) -> bool: ...
    async def claim_orphan(self, token: str) -> CallRecord | None: ...
    async def mark_attached(self, call_id: str, token: str) -> bool: ...
    async def wait_handover(self, timeout: float) -> bool: ...
    async def aclose(self) -> None: ...


@dataclass(frozen=True)
class Limits:
    """The limits a store enforces (from :class:`~bridge.server.settings.ServerSettings`)."""

    rate_burst: int
    rate_period: float
    token_burst: int
    token_period: float
    max_calls: int
    fleet_seconds_per_day: float  # 0 = no cap
    reservation_lease: float = 60.0  # a pending call creation holds its slot at most this long


def refusal(code: str, retry_after: int | None = None, *, limit: int = 0) -> Refusal:
    """The one wording of every refusal the limits make (docs/web.md lists them)."""
    match code:
        case "access_token_required":
            return Refusal(401, code, "A valid access token is required to start a session.")
        case "kiosk_revoked":
            return Refusal(403, code, "This kiosk's token has been revoked; ask the operator for a new one.")
        case "rate_limited":
            return Refusal(429, code, f"Too many sessions started from this address; try again in {retry_after} s.",
                           retry_after)  # fmt: skip
        case "token_rate_limited":
            return Refusal(429, code, f"Too many sessions started with this token; try again in {retry_after} s.",
                           retry_after)  # fmt: skip
        case "too_many_calls":
            busy = f" ({limit} calls running)" if limit else ""
            return Refusal(429, code, f"The server is busy{busy}; try again in a minute.", 60)
        case "kiosk_busy":
            return Refusal(429, code, "This kiosk already runs as many calls as it may; end one first.", 60)
        case "kiosk_minutes_exhausted":
            return Refusal(429, code, "This kiosk has used its call minutes for today (UTC).", retry_after)
        case "fleet_minutes_exhausted":
            return Refusal(429, code, "The fleet has used its call minutes for today (UTC).", retry_after)
        case "store_unavailable":
            return Refusal(503, code, "The server cannot reach its shared store; try again shortly.", 5)
        case _:
            return Refusal(400, code, "Refused.")


def seconds_to_midnight(now: float) -> int:
    return max(1, SECONDS_PER_DAY - int(now) % SECONDS_PER_DAY)


class MemoryStore:
    """One process's state: the per-client and per-token buckets, the call cap, fleet minutes today.

    No kiosks (their tokens live in Redis) and no other replicas: nothing to take over or hand over.
    """

    shared = False

    def __init__(self, limits: Limits, clock: Callable[[], float] = time.time, max_clients: int = 10_000) -> None:
        self.limits = limits
        self._clock = clock
        self.clients = RateLimiter(limits.rate_burst, limits.rate_period, max_clients, clock=clock)
        self.tokens = RateLimiter(limits.token_burst, limits.token_period, 1_000, clock=clock)
        self._pending: dict[str, float] = {}  # reservation -> lease end
        self._calls: dict[str, CallRecord] = {}
        self._accounted: dict[str, float] = {}
        self._seconds: dict[int, float] = {}  # UTC day -> call seconds

    async def ping(self) -> None:
        return None

    def _day(self) -> int:
        return int(self._clock()) // SECONDS_PER_DAY

    async def admit(self, req: AdmitRequest) -> Verdict:
        now = self._clock()
        cap = self.limits.fleet_seconds_per_day
        if cap > 0 and self._seconds.get(self._day(), 0.0) >= cap:
            return refusal("fleet_minutes_exhausted", seconds_to_midnight(now))
        if req.kind == "call":
            self._pending = {k: v for k, v in self._pending.items() if v > now}
            if len(self._calls) + len(self._pending) >= self.limits.max_calls:
                return refusal("too_many_calls", limit=self.limits.max_calls)
        if self.clients.peek(req.client) < 1.0:
            return refusal("rate_limited", self.clients.wait(req.client))
        if req.credential is not None and self.tokens.peek(req.credential) < 1.0:
            return refusal("token_rate_limited", self.tokens.wait(req.credential))
        self.clients.take(req.client)
        if req.credential is not None:
            self.tokens.take(req.credential)
        if req.kind == "call" and req.reservation is not None:
            self._pending[req.reservation] = now + self.limits.reservation_lease
        return Admitted(None)

    async def whois(self, token_hash: str) -> str | None:
        return None  # no kiosks without a shared store

    async def refund_mint(self, kiosk: str | None) -> None:
        return None

    async def cancel(self, reservation: str, kiosk: str | None) -> None:
        self._pending.pop(reservation, None)

    async def register(self, record: CallRecord, reservation: str, token: str) -> None:
        self._pending.pop(reservation, None)
        self._calls[record.call_id] = record
        self._accounted[record.call_id] = self._clock()

    def _account(self, call_id: str) -> None:
        now = self._clock()
        since = self._accounted.get(call_id, now)
        self._accounted[call_id] = now
        self._seconds[self._day()] = self._seconds.get(self._day(), 0.0) + (now - since)

    async def heartbeat(self, beats: list[Beat]) -> list[bool]:
        for beat in beats:
            if beat.call_id in self._calls:
                self._account(beat.call_id)
        return [b.call_id in self._calls for b in beats]

    async def end(
        self, call_id: str, token: str | None, *, count: bool = True, usage: TokenUsage | None = None, cost: int = 0
    ) -> bool:
        if call_id not in self._calls:
            return False
        if count:
            self._account(call_id)
        del self._calls[call_id]
        self._accounted.pop(call_id, None)
        return True

    async def get(self, call_id: str) -> CallRecord | None:
        return self._calls.get(call_id)

    async def claim_tool_call(self, call_id: str, tool_call_id: str) -> tuple[bool, str | None]:
        record = self._calls.get(call_id)
        return True, record.agent if record is not None else None

    async def set_agent(self, call_id: str, tool_call_id: str, agent: str) -> None:
        record = self._calls.get(call_id)
        if record is not None:
            self._calls[call_id] = CallRecord(**{**record.__dict__, "agent": agent})

    async def release(self, call_id: str, token: str) -> bool:
        return False  # nobody to hand over to: shutdown hangs up instead

    async def claim_orphan(self, token: str) -> CallRecord | None:
        return None

    async def mark_attached(self, call_id: str, token: str) -> bool:
        return call_id in self._calls

    async def wait_handover(self, timeout: float) -> bool:
        return False

    async def aclose(self) -> None:
        return None

    def __len__(self) -> int:
        return len(self._calls)
