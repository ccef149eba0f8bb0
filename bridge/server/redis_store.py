"""The fleet's shared state in Redis (``--redis-url``), through ``redis.asyncio`` and the scripts in
:mod:`bridge.server.lua`. One round trip per decision: a mint is one ``EVALSHA`` (admit), a heartbeat one
for all of this replica's calls.

Timeouts are short and there is one immediate retry (a pooled connection that went stale when Redis
restarted): a Redis that is down costs a request about one connect attempt, then a 503.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import BusyLoadingError, ConnectionError, TimeoutError

from bridge.server import lua
from bridge.server.store import (
    SECONDS_PER_DAY,
    AdmitRequest,
    Admitted,
    Beat,
    CallRecord,
    Limits,
    StoreUnavailable,
    Verdict,
    refusal,
)
from bridge.server.usage import TokenUsage

log = logging.getLogger(__name__)

_UNAVAILABLE = (ConnectionError, TimeoutError, BusyLoadingError, OSError)
RECORD_TTL_S = 6 * 3600  # a call record outlives any call (the API ends sessions long before)
LEASE_FACTOR = 3  # a call holds its slot in the fleet cap for 3 TTLs after its last heartbeat


@dataclass(frozen=True)
class KioskInfo:
    name: str
    created: float
    revoked: bool
    max_calls: int
    seconds_per_day: float
    today: dict[str, float]


def connect(url: str, client_name: str, timeout: float = 1.0) -> aioredis.Redis:
    """A client (no I/O yet): ``decode_responses``, short timeouts, one retry on a stale connection."""
    return aioredis.Redis.from_url(
        url,
        decode_responses=True,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 1),
        client_name=client_name,
    )


class RedisStore:
    """:class:`bridge.server.store.Store` over Redis. ``replica`` names this process in call records."""

    shared = True

    def __init__(self, client: aioredis.Redis, prefix: str, replica: str, limits: Limits, ttl: float) -> None:
        self.redis = client
        self.prefix = prefix
        self.replica = replica
        self.limits = limits
        self.ttl_ms = max(1, round(ttl * 1000))
        self.lease_ms = self.ttl_ms * LEASE_FACTOR
        self._pubsub: PubSub | None = None
        self._scripts: dict[str, AsyncScript] = {
            name: client.register_script(getattr(lua, name))
            for name in (
                "ADMIT", "REFUND_MINT", "CANCEL", "REGISTER", "HEARTBEAT", "END", "CLAIM_TOOL_CALL",
                "SET_AGENT", "RELEASE", "CLAIM_ORPHAN", "MARK_ATTACHED", "KIOSK_ADD", "KIOSK_REVOKE",
            )
        }  # fmt: skip

    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    async def _run(self, name: str, *args: str | int | float) -> Any:
        try:
            return await self._scripts[name](keys=[], args=[self.prefix, *args])
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"Redis did not answer ({type(exc).__name__})") from exc

    async def ping(self) -> None:
        try:
            await self.redis.ping()
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"Redis did not answer ({type(exc).__name__})") from exc

    # ---- limits ---------------------------------------------------------------------------------------

    async def admit(self, req: AdmitRequest) -> Verdict:
        lim = self.limits
        code, kiosk, retry = await self._run(
            "ADMIT",
            req.kind,
            req.client,
            req.credential or "",
            req.token_hash or "",
            lim.rate_burst,
            lim.rate_period * 1000,
            lim.token_burst,
            lim.token_period * 1000,
            lim.max_calls,
            lim.fleet_seconds_per_day,
            req.reservation or "",
            round(lim.reservation_lease * 1000),
            "1" if req.anonymous_ok else "0",
        )
        if code == "ok":
            return Admitted(kiosk or None)
        return refusal(code, int(retry) if retry else None, limit=lim.max_calls)

    async def whois(self, token_hash: str) -> str | None:
        """The kiosk a token belongs to (revoked or not), or None."""
        try:
            name = await self.redis.get(self.key("ktok", token_hash))
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"Redis did not answer ({type(exc).__name__})") from exc
        return str(name) if name else None

    async def refund_mint(self, kiosk: str | None) -> None:
        await self._run("REFUND_MINT", kiosk or "")

    async def cancel(self, reservation: str, kiosk: str | None) -> None:
        await self._run("CANCEL", reservation, kiosk or "")

    # ---- the call registry ------------------------------------------------------------------------------

    async def register(self, record: CallRecord, reservation: str, token: str) -> None:
        await self._run(
            "REGISTER",
            record.call_id,
            reservation,
            record.owner,
            token,
            self.ttl_ms,
            self.lease_ms,
            RECORD_TTL_S,
            record.agent,
            record.kiosk or "",
            record.model,
        )

    async def heartbeat(self, beats: list[Beat]) -> list[bool]:
        if not beats:
            return []
        args: list[str | int | float] = [self.ttl_ms, self.lease_ms, RECORD_TTL_S]
        for b in beats:
            u = b.usage
            args += [b.call_id, b.token, u.text_in, u.text_cached, u.audio_in, u.audio_cached, u.text_out]
            args += [u.audio_out, b.cost_micro_usd]
        held = await self._run("HEARTBEAT", *args)
        return [bool(x) for x in held]

    async def end(
        self, call_id: str, token: str | None, *, count: bool = True, usage: TokenUsage | None = None, cost: int = 0
    ) -> bool:
        u = usage or TokenUsage()
        fields = (u.text_in, u.text_cached, u.audio_in, u.audio_cached, u.text_out, u.audio_out, cost)
        return bool(await self._run("END", call_id, token or "", "1" if count else "0", *fields))

    async def get(self, call_id: str) -> CallRecord | None:
        try:
            raw = await self.redis.hgetall(self.key("call", call_id))
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"Redis did not answer ({type(exc).__name__})") from exc
        f = {str(k): str(v) for k, v in raw.items()}
        if not f or f.get("state") == "ended":
            return None
        return CallRecord(
            call_id=call_id,
            owner=f.get("owner", ""),
            agent=f.get("agent", ""),
            created=int(f.get("created") or 0) / 1000,
            kiosk=f.get("kiosk") or None,
            state=f.get("state", "live"),  # type: ignore[arg-type]
            model=f.get("model", ""),
        )

    async def claim_tool_call(self, call_id: str, tool_call_id: str) -> tuple[bool, str | None]:
        won, agent = await self._run("CLAIM_TOOL_CALL", call_id, tool_call_id, self.replica)
        return bool(won), agent or None

    async def set_agent(self, call_id: str, tool_call_id: str, agent: str) -> None:
        await self._run("SET_AGENT", call_id, tool_call_id, self.replica, agent)

    async def release(self, call_id: str, token: str) -> bool:
        return bool(await self._run("RELEASE", call_id, token))

    async def claim_orphan(self, token: str) -> CallRecord | None:
        found = await self._run("CLAIM_ORPHAN", self.replica, token, self.ttl_ms, self.lease_ms)
        if not found:
            return None
        call_id, agent, created, kiosk, previous, state, model, released = found
        return CallRecord(
            call_id, previous, agent, int(created) / 1000, kiosk or None, state, model, int(released) / 1000
        )

    async def mark_attached(self, call_id: str, token: str) -> bool:
        return bool(await self._run("MARK_ATTACHED", call_id, token, self.replica))

    async def wait_handover(self, timeout: float) -> bool:
        """Block up to ``timeout`` s for a released call (pub/sub); True when one was announced."""
        try:
            if self._pubsub is None:
                pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
                await pubsub.subscribe(self.key("handover"))
                self._pubsub = pubsub
            msg = await self._pubsub.get_message(timeout=timeout)
        except _UNAVAILABLE as exc:
            await self._drop_pubsub()
            raise StoreUnavailable(f"Redis did not answer ({type(exc).__name__})") from exc
        return msg is not None and msg.get("type") == "message"

    async def _drop_pubsub(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            try:
                await pubsub.aclose()
            except _UNAVAILABLE:
                pass

    async def aclose(self) -> None:
        await self._drop_pubsub()
        await self.redis.aclose()

    # ---- kiosks (``bridge serve tokens``) ------------------------------------------------------------------

    async def add_kiosk(self, name: str, token_hash: str, max_calls: int, seconds_per_day: float) -> bool:
        return bool(await self._run("KIOSK_ADD", name, token_hash, max_calls, seconds_per_day))

    async def revoke_kiosk(self, name: str) -> bool:
        return bool(await self._run("KIOSK_REVOKE", name))

    async def kiosks(self, now: float) -> list[KioskInfo]:
        """Every kiosk with today's usage (UTC day of ``now``), sorted by name; the fleet as ``_fleet``."""
        day = int(now) // SECONDS_PER_DAY
        try:
            names = sorted(str(n) for n in await self.redis.smembers(self.key("kiosks")))
            pipe = self.redis.pipeline(transaction=False)
            for name in names:
                pipe.hgetall(self.key("kiosk", name))
                pipe.hgetall(self.key("usage", str(day), name))
            pipe.hgetall(self.key("usage", str(day), "_fleet"))
            rows = await pipe.execute()
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"Redis did not answer ({type(exc).__name__})") from exc
        out = []
        for i, name in enumerate(names):
            k, used = rows[2 * i], rows[2 * i + 1]
            out.append(
                KioskInfo(
                    name=name,
                    created=int(k.get("created") or 0) / 1000,
                    revoked=k.get("revoked") == "1",
                    max_calls=int(k.get("max_calls") or 0),
                    seconds_per_day=float(k.get("seconds_per_day") or 0),
                    today={f: float(v) for f, v in used.items()},
                )
            )
        fleet = rows[-1]
        out.append(KioskInfo("_fleet", 0.0, False, 0, 0.0, {f: float(v) for f, v in fleet.items()}))
        return out


def utc_day(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")
