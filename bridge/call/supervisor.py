"""The supervisor of a call's connections: keeps the conversation going across drops, server closes and
the service's session cap.

- **Bring-up** of every connection: wait for ``session.created``, replay the conversation into a new
  session (:mod:`bridge.call.replay`), then move the microphone to it (:meth:`Call.activate`).
- **A connection ends** with a typed :class:`CloseInfo` (the link noticed: ICE failed, data channel or
  socket closed, no RTP or no pong for ~2 s, a ``session_expired`` error). A fatal reason (rejected key,
  refused request, no quota) ends the call with it. Otherwise the supervisor **reconnects**: local playback
  stops with a short fade, microphone audio is dropped (counted) rather than queued, and it tries again
  with a fresh key, exponential backoff with jitter (0.25 s doubling to 8 s, each wait drawn from its upper
  half), for up to ``reconnect_for`` seconds (0: never; ``inf``: forever). The console says
  ``reconnecting (attempt N, reason)…`` and ``reconnected in N ms (replayed K items)``; the transcript gets
  one ``reconnect`` line per reconnect.
- **Renewal before the cap**: in the last min(5 min, 25 %) of a session's announced lifetime
  (``session.expires_at``), at a turn boundary (the user silent locally and to the server, no reply being
  generated, queued or playing, no tool running), the next session is connected and told the conversation
  *before* the microphone moves to it; then the old one is hung up (make-before-break: no gap, no lost
  speech). If no boundary comes in time, the server's ``session_expired`` is handled like a drop.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bridge.aio import task_group
from bridge.call.connection import Connection
from bridge.call.replay import ASK_FOR_AUDIO, ReplayBudget, replay_events
from bridge.errors import AuthError, ConnectError, ProtocolError, QuotaError
from bridge.link.base import CloseInfo, CloseReason

if TYPE_CHECKING:
    from bridge.call.call import Call

log = logging.getLogger(__name__)

START_TIMEOUT_S = 5.0  # a connected session must announce itself (session.created) within this
FADE_MS = 5
QUIET_BEFORE_RENEWAL_S = 0.5  # the room must have been this quiet (locally) before moving sessions
RENEWAL_POLL_S = 0.1
RENEWAL_WINDOW_MAX_S = 300.0
RENEWAL_WINDOW_SHARE = 0.25
RENEWAL_LAST_CHANCE_S = 1.0  # this close to the cap, let it expire and reconnect instead


@dataclass(frozen=True)
class ReconnectPolicy:
    """How hard a call tries to stay connected (``--reconnect-for``, the replay budget, renewal)."""

    reconnect_for: float = 300.0
    """Seconds of trying after a drop before giving up; 0 turns reconnecting off, ``inf`` never gives up."""
    first_delay: float = 0.25
    max_delay: float = 8.0
    renew: bool = True
    budget: ReplayBudget = field(default_factory=ReplayBudget)

    def delay(self, attempt: int, rng: random.Random) -> float:
        """The wait after failed attempt ``attempt`` (1, 2, ...): exponential, capped, jittered in its upper half."""
        ceiling = min(self.max_delay, self.first_delay * 2 ** (attempt - 1))
        return rng.uniform(ceiling / 2, ceiling)


class Supervisor:
    """Keeps a call connected (see module docstring)."""

    def __init__(
        self,
        call: Call,
        policy: ReconnectPolicy | None = None,
        *,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.call = call
        self.policy = policy or ReconnectPolicy()
        self.last: Connection | None = None
        self.reconnects = 0
        self.renewals = 0
        self._open: set[Connection] = set()
        self._rng = rng or random.Random()
        self._clock = clock

    async def run(self) -> CloseInfo:
        """Until the call cannot go on; returns why (cancel to stop: every connection is hung up)."""
        try:
            return await self._run()
        finally:
            for conn in list(self._open):  # stopped (Ctrl-C, --duration) or failed: hang up, bounded
                await self.call.close_connection(conn)

    async def _run(self) -> CloseInfo:
        conn = await self.call.open_connection()  # the first one: a failure is one clear line, no retry
        async with task_group() as tg:
            running = await self._bring_up(tg, conn, replay=False)
            while True:
                info, renewed = await self._watch(tg, conn, running)
                if renewed is not None:
                    conn, running = renewed
                    continue
                await self.call.close_connection(conn)
                if info.fatal or info.reason is CloseReason.HANGUP or self.policy.reconnect_for <= 0:
                    return info
                got = await self._reconnect(tg, info, conn)
                if isinstance(got, CloseInfo):
                    return got
                conn, running = got

    # ---- one connection's life -------------------------------------------------------------------------

    async def _bring_up(
        self, tg: asyncio.TaskGroup, conn: Connection, *, replay: bool, activate: bool = True
    ) -> asyncio.Task[CloseInfo]:
        """Run ``conn``, wait for its session, tell it the conversation (``replay``), and (``activate``) move
        the microphone to it."""
        self.last = conn
        self._open.add(conn)
        running = tg.create_task(conn.run(), name="connection")
        started = tg.create_task(conn.runtime.started.wait(), name="session-start")
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                await asyncio.wait({running, started}, return_when=asyncio.FIRST_COMPLETED)
        except TimeoutError:
            started.cancel()
            await self.call.close_connection(conn)
            raise ConnectError(f"no session from the server within {START_TIMEOUT_S:.0f} s") from None
        started.cancel()
        if running.done():
            return running  # it ended before its session started: the caller sees why
        if replay:
            events = replay_events(self.call.record.history, self.policy.budget)
            for event in events:
                await conn.runtime.send(event)
            await conn.runtime.send(ASK_FOR_AUDIO)
            conn.replayed = len(events)
        if activate:
            self.call.activate(conn)
        return running

    async def _watch(
        self, tg: asyncio.TaskGroup, conn: Connection, running: asyncio.Task[CloseInfo]
    ) -> tuple[CloseInfo, tuple[Connection, asyncio.Task[CloseInfo]] | None]:
        """Until ``conn`` ends (its reason) or has been renewed (the new connection, already current)."""
        renewal = tg.create_task(self._renew_when_due(tg, conn), name="renewal") if self.policy.renew else None
        await asyncio.wait({running} if renewal is None else {running, renewal}, return_when=asyncio.FIRST_COMPLETED)
        if renewal is not None and renewal.done() and not running.done():
            new_conn, new_running = renewal.result()
            await self.call.close_connection(conn)  # make-before-break: the old one goes last
            old = await running
            log.info("the old session ended after the renewal: %s", old.line())
            return old, (new_conn, new_running)
        if renewal is not None:
            renewal.cancel()
        return running.result(), None

    async def _renew_when_due(
        self, tg: asyncio.TaskGroup, conn: Connection
    ) -> tuple[Connection, asyncio.Task[CloseInfo]]:
        """Move to a new session near the cap, at a turn boundary (never returns if there is no cap)."""
        rt = conn.runtime
        await rt.started.wait()
        if rt.expires_at is None:
            await asyncio.Event().wait()
        assert rt.expires_at is not None
        lifetime = max(0.0, rt.expires_at - time.time())
        window = min(RENEWAL_WINDOW_MAX_S, RENEWAL_WINDOW_SHARE * lifetime)
        await asyncio.sleep(max(0.0, rt.expires_at - window - time.time()))
        while True:
            if rt.expires_at - time.time() < RENEWAL_LAST_CHANCE_S:
                await asyncio.Event().wait()  # no boundary in time: session_expired is handled as a drop
            if self._at_boundary(conn):
                t0 = self._clock()
                try:
                    new = await self.call.open_connection()
                except ConnectError as exc:
                    log.warning("renewing the session failed (%s); it will be reconnected when it ends", exc)
                    await asyncio.Event().wait()
                new_running = await self._bring_up(tg, new, replay=True, activate=False)
                while not self._at_boundary(conn):  # someone started talking meanwhile: wait for the next pause
                    if new_running.done() or rt.expires_at - time.time() < RENEWAL_LAST_CHANCE_S:
                        break
                    await asyncio.sleep(RENEWAL_POLL_S)
                self.call.activate(new)
                self.renewals += 1
                self._note("renewal", conn, new, attempts=1, downtime_ms=0.0, took_ms=(self._clock() - t0) * 1000)
                return new, new_running
            await asyncio.sleep(RENEWAL_POLL_S)

    def forget(self, conn: Connection) -> None:
        """``conn`` is being closed by the call: nothing left to hang up at the end."""
        self._open.discard(conn)

    def _at_boundary(self, conn: Connection) -> bool:
        quiet = self.call.station_quiet_for() >= QUIET_BEFORE_RENEWAL_S
        return quiet and conn.runtime.at_turn_boundary()

    # ---- after a drop ---------------------------------------------------------------------------------

    async def _reconnect(
        self, tg: asyncio.TaskGroup, info: CloseInfo, old: Connection
    ) -> tuple[Connection, asyncio.Task[CloseInfo]] | CloseInfo:
        """Open a replacement for ``old`` (which ended with ``info``), or say why not."""
        t0, detected_unix = self._clock(), time.time()
        self.call.fade_out(FADE_MS)
        dropped_before = self.call.unrouted_frames()
        deadline = t0 + self.policy.reconnect_for
        last = info.line()
        console = self.call.record.console
        log.warning("connection lost: %s", last)
        attempt = 0
        while True:
            attempt += 1
            console.line("bridge", f"reconnecting (attempt {attempt}, {last})…")
            try:
                conn = await self.call.open_connection()
                running = await self._bring_up(tg, conn, replay=True)
            except AuthError as exc:
                return CloseInfo(CloseReason.AUTH, str(exc))
            except QuotaError as exc:
                return CloseInfo(CloseReason.QUOTA, str(exc))
            except ProtocolError as exc:
                return CloseInfo(CloseReason.REJECTED, str(exc))
            except ConnectError as exc:
                last = str(exc)
                log.info("reconnect attempt %d failed: %s", attempt, last)
            else:
                if not running.done():
                    self.reconnects += 1
                    downtime = (self._clock() - t0) * 1000
                    dropped = self.call.unrouted_frames() - dropped_before
                    self._note(
                        info.reason.value,
                        old,
                        conn,
                        attempts=attempt,
                        downtime_ms=downtime,
                        mic_dropped_ms=dropped * 20,
                        detected_unix=round(detected_unix, 3),
                    )
                    console.line("bridge", f"reconnected in {downtime:.0f} ms (replayed {conn.replayed} items)")
                    return conn, running
                ended = await running  # it died during its bring-up: that counts as a failed attempt
                await self.call.close_connection(conn)
                if ended.fatal:
                    return ended
                last = ended.line()
            remaining = deadline - self._clock()
            if remaining <= 0:
                break
            await asyncio.sleep(min(self.policy.delay(attempt, self._rng), remaining))
        waited = "" if math.isinf(self.policy.reconnect_for) else f" after {self.policy.reconnect_for:g} s"
        return CloseInfo(info.reason, f"gave up reconnecting{waited} ({attempt} attempts); last: {last}")

    def _note(self, reason: str, old: Connection, new: Connection, **fields: float | int) -> None:
        """The transcript's ``reconnect`` line (and ``-v``'s log)."""
        line = {
            "reason": reason,
            "replayed": new.replayed,
            "old_session_id": old.runtime.session_id,
            "old_call_id": old.link.call_id,
            "new_session_id": new.runtime.session_id,
            "new_call_id": new.link.call_id,
            # durations to 0.1 ms, unix times to the ms (0.1 s would hide a detection time)
            **{k: round(v, 3 if k.endswith("_unix") else 1) if isinstance(v, float) else v for k, v in fields.items()},
        }
        self.call.record.write("reconnect", **line)
        log.info("reconnect: %s", line)
