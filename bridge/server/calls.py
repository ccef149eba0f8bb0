"""Browser calls with server-side agents (``bridge serve --agents``): ``POST /api/call``, hangup, and the
fleet's call lifecycle (heartbeat, takeover, handover).

The page posts its SDP offer here instead of minting a key. We create the call upstream with the API key
(multipart ``sdp`` + the start agent's ``session``, PROTOCOL.md 2.1), register it in the store, attach the
agents over the sideband WebSocket (``?call_id=``, PROTOCOL.md 2.4) and only then hand the answer back, so
no event of the call (a function call in the first reply, say) happens before the tools are listening.
The audio flows browser <-> API directly; the API key never leaves the server.

With a shared store (``--redis-url``) every call is registered with its owner, active agent and a lock the
owner refreshes (:class:`CallManager`): any replica can hang it up, and when the owner's lock lapses
(``kill -9``) another replica wins the lock, attaches its own sideband with the call's active agent and
tools, and the conversation goes on. On SIGTERM a replica releases its locks at once and keeps answering
until a successor is attached (make before break); each function call is answered by exactly one replica
(a claim in the store), so nothing is answered twice and nothing is dropped during the overlap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
from aiohttp import web

from bridge.agents.config import HANDOFF_PREFIX, AgentSet
from bridge.agents.controller import AgentController
from bridge.agents.sideband import create_call, run_sideband
from bridge.aio import task_group
from bridge.call.runtime import Runtime
from bridge.errors import AuthError, BridgeError, ConnectError, ProtocolError, QuotaError
from bridge.link import http as rest
from bridge.protocol import events as ev
from bridge.server.metrics import ServerMetrics
from bridge.server.mint import QUOTA_MESSAGE, QUOTA_STATUS, redact
from bridge.server.relay import read_bounded
from bridge.server.resume import RecentCalls, may_resume
from bridge.server.security import json_error
from bridge.server.settings import ServerSettings
from bridge.server.store import Beat, CallRecord, Store, StoreUnavailable, refusal
from bridge.server.usage import TokenUsage
from bridge.transcript import TranscriptWriter

log = logging.getLogger(__name__)

ATTACH_WAIT_S = 5.0  # the sideband must be listening before the page gets its answer
HANGUP_WAIT_S = 5.0  # after an upstream hangup, how long the sideband may take to see the call end
SHUTDOWN_HANGUP_S = 3.0
HANDOVER_POLL_S = 0.05
TAKEOVER_RETRY_S = 1.0
_CALL_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_STATUS = re.compile(r"\((\d{3})\)")


class ServerController(AgentController):
    """The agents' controller on the server: one signal (the sideband has seen the call's session), tool
    calls claimed in the store (exactly one replica answers each), the active agent kept in the store,
    and the token usage of ``response.done`` added up for the heartbeat to carry to the store."""

    def __init__(self, agents: AgentSet, store: Store, call_id: str) -> None:
        super().__init__(agents)
        self.attached = asyncio.Event()
        self.usage = TokenUsage()
        self.counting = True  # False once this replica has handed the call over (the successor counts)
        self.skipped = 0  # tool calls another replica answered
        self._store = store
        self._call_id = call_id

    def on_event(self, e: ev.Event) -> None:
        super().on_event(e)
        if isinstance(e, ev.SessionChanged):
            self.attached.set()
        elif isinstance(e, ev.ResponseDone) and self.counting:
            self.usage += TokenUsage.from_response(e.usage)

    def take_usage(self) -> TokenUsage:
        usage, self.usage = self.usage, TokenUsage()
        return usage

    async def on_function_call(self, call: ev.FunctionCall, runtime: Runtime) -> None:
        try:
            won, agent = await self._store.claim_tool_call(self._call_id, call.call_id)
        except StoreUnavailable:
            # Fail open: a tool answered twice (only possible during a handover) beats one never answered.
            log.warning("call %s: store unavailable; answering %s without a claim", self._call_id, call.name)
            won, agent = True, None
        if not won:
            self.skipped += 1
            log.info("call %s: %s (%s) is answered by another replica", self._call_id, call.name, call.call_id)
            return
        if agent is not None and agent != self.current.name and agent in self.agents.agents:
            # Another replica performed a handoff while we both were attached (a handover's overlap).
            self.current = self.agents.agents[agent]
        target = call.name[len(HANDOFF_PREFIX) :] if call.name.startswith(HANDOFF_PREFIX) else None
        if target is not None and target in self.current.handoffs:
            with contextlib.suppress(StoreUnavailable):
                await self._store.set_agent(self._call_id, call.call_id, target)
        await super().on_function_call(call, runtime)


@dataclass
class LiveCall:
    """One call whose sideband runs in this process. ``token`` is our lock in the store."""

    call_id: str
    token: str
    transcript: Path
    controller: ServerController
    kiosk: str | None = None
    model: str = ""
    created: float = field(default_factory=time.time)  # epoch seconds, when the call was created upstream
    taken_over: bool = False
    from_handover: bool = False  # taken while its previous owner was still attached (graceful stop)
    started: float = field(default_factory=time.monotonic)
    task: asyncio.Task[None] | None = None
    draining: bool = False  # released for a handover: another replica takes it; we answer until then
    lost: bool = False  # the store says another replica holds it: leave without ending it
    gone: bool = False  # the sideband was refused: the call no longer exists upstream


def transcript_path(directory: Path, call_id: str, now: float | None = None) -> Path:
    """``<dir>/<UTC stamp>-<call_id>.jsonl``."""
    stamp = datetime.fromtimestamp(time.time() if now is None else now, UTC).strftime("%Y%m%dT%H%M%SZ")
    return directory / f"{stamp}-{call_id}.jsonl"


def _upstream_failure(exc: BridgeError, settings: ServerSettings) -> web.Response:
    """A failed call creation in this server's error shape (no key material, PROTOCOL.md 6)."""
    text = redact(str(exc), settings.api_key, settings.access_token)
    if isinstance(exc, AuthError):
        return json_error(502, "upstream_auth", "The Realtime API refused the server's API key.")
    if isinstance(exc, QuotaError):
        return json_error(QUOTA_STATUS, "insufficient_quota", QUOTA_MESSAGE)
    if isinstance(exc, ConnectError):
        if "timed out" in text:
            return json_error(504, "upstream_timeout", "The Realtime API did not answer the call in time.")
        return json_error(502, "upstream_unreachable", "The server cannot reach the Realtime API.")
    found = _STATUS.search(text)
    status = int(found.group(1)) if found else 0
    if status == 429:
        return json_error(503, "upstream_rate_limited", "The Realtime API is rate limiting; try again.")
    if 400 <= status < 500:
        detail = text.split(": ", 1)[-1]
        return json_error(502, "upstream_rejected", f"The Realtime API refused the call: {detail}")
    return json_error(502, "upstream_error", "The Realtime API failed to create the call.")


def new_token() -> str:
    return secrets.token_hex(16)


class CallManager:
    """Every call whose sideband runs here, and the fleet loops (heartbeat, takeover), in one TaskGroup.

    ``async with CallManager(...)``: the supervisor task owns the group; :meth:`hand_over` (SIGTERM with a
    shared store) passes our calls to other replicas; leaving the context hangs up what is left when the
    store is this process's own (one machine), or leaves it to be taken over when it is shared.
    """

    def __init__(
        self, settings: ServerSettings, http: aiohttp.ClientSession, store: Store, metrics: ServerMetrics
    ) -> None:
        self.settings = settings
        self.http = http
        self.store = store
        self.metrics = metrics
        self.calls: dict[str, LiveCall] = {}
        self.recent = RecentCalls()  # ended calls' active agents, for X-Resume-Call (bridge.server.resume)
        self._tg: asyncio.TaskGroup | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._takeover: asyncio.Task[None] | None = None
        self._store_down = False
        self.closing = False

    def __len__(self) -> int:
        return len(self.calls)

    @property
    def running(self) -> bool:
        """False once the supervisor stopped (shutdown, or a bug in a loop): /healthz then fails."""
        return self._supervisor is not None and not self._supervisor.done()

    # ---- lifetime -------------------------------------------------------------------------------------

    async def __aenter__(self) -> CallManager:
        self._supervisor = asyncio.create_task(self._supervise(), name="calls")
        ready = asyncio.create_task(self._ready.wait())
        await asyncio.wait({ready, self._supervisor}, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        if self._supervisor.done():
            await self._supervisor  # raises what stopped it
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _supervise(self) -> None:
        try:
            async with task_group() as tg:
                self._tg = tg
                loops = [tg.create_task(self._heartbeat_loop(), name="heartbeat")]
                if self.store.shared and self.settings.agents is not None:
                    self._takeover = tg.create_task(self._takeover_loop(), name="takeover")
                    loops.append(self._takeover)
                self._ready.set()
                await self._stop.wait()
                for task in loops:
                    task.cancel()
        finally:
            self._tg = None

    async def aclose(self) -> None:
        """Hang up (own store) or leave for a takeover (shared store) every call left; stop the loops."""
        self.closing = True
        left = [c for c in self.calls.values() if not c.draining]
        if left and not self.store.shared:
            log.info("shutting down: hanging up %d call(s)", len(left))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(SHUTDOWN_HANGUP_S):
                    await asyncio.gather(*(self._hangup_upstream(c.call_id) for c in left), return_exceptions=True)
        elif left:
            log.info("shutting down: %d call(s) left for another replica to take over", len(left))
            for call in left:
                call.lost = True  # not ended: the lock lapses and another replica takes it over
        for call in list(self.calls.values()):
            if call.task is not None:
                call.task.cancel()
        self._stop.set()
        if self._supervisor is not None:
            try:
                await self._supervisor
            except Exception:  # a bug in a loop: say so (the calls are gone either way)
                log.exception("the call manager failed")

    def _spawn(self, call: LiveCall) -> asyncio.Task[None]:
        if self._tg is None or self.closing:
            raise RuntimeError("the call manager is not running")
        task = self._tg.create_task(self._run(call), name=f"sideband-{call.call_id}")
        call.task = task
        self.calls[call.call_id] = call
        self.metrics.calls_active.set(len(self.calls))
        return task

    # ---- one call's sideband ----------------------------------------------------------------------------

    async def _run(self, call: LiveCall) -> None:
        """One call's agents until the call ends or this task is cancelled; then the registry is told."""
        settings = self.settings
        assert settings.agents is not None
        writer = TranscriptWriter(call.transcript)
        try:
            writer.open()
            await run_sideband(
                self.http, settings.api_base, settings.api_key, call.call_id, settings.agents, writer,
                controller=call.controller,
            )  # fmt: skip
        except (AuthError, ProtocolError) as exc:
            call.gone = True
            self.metrics.sideband_errors.inc()
            log.warning("call %s: sideband refused: %s", call.call_id, redact(str(exc), settings.api_key))
        except BridgeError as exc:
            self.metrics.sideband_errors.inc()
            log.warning("call %s: sideband ended: %s", call.call_id, redact(str(exc), settings.api_key))
        except OSError as exc:
            log.warning("call %s: cannot write the transcript %s: %s", call.call_id, call.transcript, exc.strerror)
        except Exception:  # a bug in one call must not end every other call in the group
            self.metrics.sideband_errors.inc()
            log.exception("call %s: sideband failed", call.call_id)
        finally:
            writer.close()
            self.recent.remember(call.call_id, call.controller.current.name, call.kiosk)
            if self.calls.get(call.call_id) is call:
                del self.calls[call.call_id]
            self.metrics.calls_active.set(len(self.calls))
            await self._finish(call)

    async def _finish(self, call: LiveCall) -> None:
        """Tell the store how the call left us: ended (or gone), handed over, or lost to another replica."""
        ctrl = call.controller
        if call.gone and call.from_handover:
            # The API may allow one sideband per call (UNCONFIRMED, PROTOCOL.md 2.4): refused while the
            # leaving replica may still be attached is no proof that the call ended. Let go and retry
            # (the takeover loop waits a second) until the handover window has passed.
            call.lost = True
            with contextlib.suppress(StoreUnavailable):
                await self.store.release(call.call_id, call.token)
        how = "handed over" if call.draining else "left to another replica" if call.lost else "ended"
        if not call.draining and not call.lost:
            usage = ctrl.take_usage()  # since the last beat
            try:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(2.0):
                        await self.store.end(
                            call.call_id, call.token, count=not call.gone, usage=usage,
                            cost=usage.cost_micro_usd(call.model),
                        )  # fmt: skip
            except StoreUnavailable:
                log.warning("call %s: store unavailable at the end; its lease will lapse", call.call_id)
        log.info(
            "call %s %s after %.0f s: agent %s, %d handoffs, %d tool calls (%d answered elsewhere); transcript %s",
            call.call_id, how, time.monotonic() - call.started, ctrl.current.name, len(ctrl.history),
            ctrl.tool_calls, ctrl.skipped, call.transcript,
        )  # fmt: skip

    async def _attach(self, call: LiveCall) -> bool:
        """Run the call's sideband; True once it has seen the call's session within ATTACH_WAIT_S."""
        task = self._spawn(call)
        attached = asyncio.create_task(call.controller.attached.wait())
        try:
            await asyncio.wait({attached, task}, timeout=ATTACH_WAIT_S, return_when=asyncio.FIRST_COMPLETED)
        finally:
            attached.cancel()
        return call.controller.attached.is_set() and not task.done()

    async def _hangup_upstream(self, call_id: str) -> bool:
        s = self.settings
        with self.metrics.upstream.labels(op="hangup").time():
            return await rest.hangup(self.http, s.api_base, call_id, s.api_key)

    async def _end_local(self, call: LiveCall) -> bool:
        """Hang the call up upstream, give the sideband a moment to see it end, then cancel it."""
        ok = await self._hangup_upstream(call.call_id)
        task = call.task
        if task is not None and not task.done():
            done, _ = await asyncio.wait({task}, timeout=HANGUP_WAIT_S)
            if not done:
                task.cancel()
                await asyncio.wait({task})
        return ok

    # ---- creating a call ----------------------------------------------------------------------------------

    async def resumed_agent(self, old_call_id: str | None, kiosk: str | None) -> str | None:
        """The agent a call that replaces ``old_call_id`` starts with (``X-Resume-Call``), or None: the old
        call is unknown here, or not this identity's (bridge.server.resume)."""
        agents = self.settings.agents
        if not old_call_id or agents is None or not _CALL_ID.match(old_call_id):
            return None
        owner: tuple[str, str | None] | None = None
        local, ended = self.calls.get(old_call_id), self.recent.get(old_call_id)
        if local is not None:
            owner = (local.controller.current.name, local.kiosk)
        elif ended is not None:
            owner = (ended.agent, ended.kiosk)
        else:
            with contextlib.suppress(StoreUnavailable):
                record = await self.store.get(old_call_id)
                owner = (record.agent, record.kiosk) if record is not None else None
        if owner is None or not may_resume(owner[1], kiosk) or owner[0] not in agents.agents:
            log.info("call %s cannot be resumed here; starting with %s", old_call_id, agents.start)
            return None
        return owner[0]

    async def create(
        self, request: web.Request, offer: str, kiosk: str | None, reservation: str, resume: str | None = None
    ) -> web.StreamResponse:
        """Create the call upstream, register it, attach the agents; 201 + SDP answer (or an error).
        ``resume``: the dropped call this one replaces (``X-Resume-Call``): start with its active agent."""
        settings = self.settings
        assert settings.agents is not None
        if self.closing:
            return json_error(503, "shutting_down", "This server is stopping; try again.", {"Retry-After": "1"})
        start = await self.resumed_agent(resume, kiosk) or settings.agents.start
        session = settings.agents.session_config(settings.session_config(), start)
        try:
            async with asyncio.timeout(settings.upstream_timeout):
                with self.metrics.upstream.labels(op="call").time():
                    answer, call_id = await create_call(self.http, settings.api_base, settings.api_key, offer, session)
        except TimeoutError:
            log.warning("call creation: upstream timed out after %.1f s", settings.upstream_timeout)
            return json_error(504, "upstream_timeout", "The Realtime API did not answer the call in time.")
        except BridgeError as exc:
            log.warning("call creation failed: %s", redact(str(exc), settings.api_key, settings.access_token))
            return _upstream_failure(exc, settings)
        if not _CALL_ID.match(call_id):
            await self._hangup_upstream(call_id)
            return json_error(502, "upstream_bad_response", "The Realtime API sent an unexpected call id.")
        token = new_token()
        record = CallRecord(call_id, settings.replica_id, start, time.time(), kiosk, "live", settings.model)
        try:
            await self.store.register(record, reservation, token)
        except StoreUnavailable:
            await self._hangup_upstream(call_id)
            r = refusal("store_unavailable")
            return json_error(r.status, r.code, r.message, r.headers)
        controller = ServerController(settings.agents, self.store, call_id)
        controller.current = settings.agents.agents[start]
        call = LiveCall(
            call_id,
            token,
            transcript_path(settings.transcripts_dir, call_id),
            controller,
            kiosk=kiosk,
            model=settings.model,
            created=record.created,
        )
        if not await self._attach(call):
            # The agents are not listening: a call without them would answer no tool and hand off to no one.
            log.warning("call %s: the sideband did not attach within %.0f s; hanging up", call_id, ATTACH_WAIT_S)
            await self._end_local(call)
            return json_error(502, "sideband_failed", "The server could not attach its agents to the call.")
        self.metrics.calls.inc()
        log.info(
            "call %s for %s: agents attached (start %s%s), transcript %s",
            call_id, request.remote, start, f", resuming {resume}" if resume else "", call.transcript,
        )  # fmt: skip
        return web.Response(
            status=201,
            text=answer,
            content_type="application/sdp",
            headers={"Location": f"/api/call/{call_id}", "X-Call-Id": call_id},
        )

    # ---- ending a call (any replica) ------------------------------------------------------------------------

    async def hangup(self, call_id: str, kiosk: str | None, shared_token: bool) -> web.StreamResponse:
        """End a call this server (any replica of the fleet) runs; kiosks may only end their own calls."""
        try:
            record = await self.store.get(call_id) if _CALL_ID.match(call_id) else None
        except StoreUnavailable:
            r = refusal("store_unavailable")
            return json_error(r.status, r.code, r.message, r.headers)
        local = self.calls.get(call_id)
        if record is None and local is None or (record is not None and kiosk and record.kiosk != kiosk):
            return json_error(404, "call_not_found", "No such call is running on this server.")
        if local is not None:
            upstream_ok = await self._end_local(local)
        else:
            upstream_ok = await self._hangup_upstream(call_id)
            with contextlib.suppress(StoreUnavailable):
                await self.store.end(call_id, None, count=True)
        where = "here" if local is not None else f"owned by {record.owner if record else '?'}"
        log.info("call %s hung up (%s; upstream %s)", call_id, where, "ok" if upstream_ok else "already gone")
        return web.json_response({"call_id": call_id, "ended": True})

    # ---- the fleet: heartbeat, takeover, handover ----------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        interval = self.settings.call_ttl / 3
        while True:
            await asyncio.sleep(interval)
            await self.beat()

    async def beat(self) -> None:
        """Refresh our locks and carry the usage since the last beat; leave calls another replica holds."""
        calls = [c for c in self.calls.values() if not c.draining and not c.lost]
        if not calls:
            return
        usages = [c.controller.take_usage() for c in calls]
        beats = [Beat(c.call_id, c.token, u, u.cost_micro_usd(c.model)) for c, u in zip(calls, usages, strict=True)]
        try:
            held = await self.store.heartbeat(beats)
        except StoreUnavailable as exc:
            for call, usage in zip(calls, usages, strict=True):
                call.controller.usage += usage  # carried by the next beat that gets through
            if not self._store_down:
                self._store_down = True
                self.metrics.store_errors.inc()
                log.warning("heartbeat: %s; calls go on, locks lapse after %.0f s", exc, self.settings.call_ttl)
            return
        if self._store_down:
            self._store_down = False
            log.info("heartbeat: the store answers again")
        for call, ok in zip(calls, held, strict=True):
            if not ok and call.task is not None and not call.task.done():
                call.lost = True
                log.warning("call %s: another replica holds it now (our lock lapsed); leaving it", call.call_id)
                call.task.cancel()

    async def _takeover_loop(self) -> None:
        """Take every call nobody holds (owner dead or leaving); then wait for a handover or the next scan."""
        scan = self.settings.call_ttl / 6
        while not self.closing:
            try:
                while not self.closing:
                    token = new_token()
                    record = await self.store.claim_orphan(token)
                    if record is None:
                        break
                    if not await self.take_over(record, token):
                        await asyncio.sleep(TAKEOVER_RETRY_S)
                await self.store.wait_handover(scan)
            except StoreUnavailable:
                await asyncio.sleep(min(1.0, scan))

    async def take_over(self, record: CallRecord, token: str) -> bool:
        """Attach our sideband to a call we just locked, with its active agent and that agent's tools."""
        agents = self.settings.agents
        assert agents is not None
        mine = self.calls.get(record.call_id)
        if mine is not None and mine.task is not None and not mine.task.done() and not mine.lost:
            # Our own lock lapsed (this loop stalled past the TTL) and nobody else took it: keep running it.
            mine.token, mine.draining, mine.controller.counting = token, False, True
            with contextlib.suppress(StoreUnavailable):
                await self.store.mark_attached(record.call_id, token)
            log.warning("call %s: our lock had lapsed; taken back", record.call_id)
            return True
        agent = record.agent
        if agent not in agents.agents:
            log.warning("call %s: agent %r is not in this replica's agents file; using %s", record.call_id,
                        agent, agents.start)  # fmt: skip
            agent = agents.start
        controller = ServerController(agents, self.store, record.call_id)
        controller.current = agents.agents[agent]
        call = LiveCall(
            record.call_id,
            token,
            transcript_path(self.settings.transcripts_dir, record.call_id),
            controller,
            kiosk=record.kiosk,
            model=record.model or self.settings.model,
            created=record.created,
            taken_over=True,
            from_handover=record.state == "handover"
            and time.time() - record.released < self.settings.handover_wait + self.settings.call_ttl,
        )
        t0 = time.monotonic()
        if not await self._attach(call):
            if call.task is not None and not call.task.done():
                # Not attached in time (a refused sideband ends the call in the registry by itself):
                # leave it for the next try, ours or another replica's.
                call.lost = True
                call.task.cancel()
                with contextlib.suppress(StoreUnavailable):
                    await self.store.release(record.call_id, token)
            log.warning("call %s: takeover from %s failed", record.call_id, record.owner)
            return False
        try:
            await self.store.mark_attached(record.call_id, token)
        except StoreUnavailable:
            log.warning("call %s: taken over, but the store did not hear it", record.call_id)
        kind = "handover" if record.state == "handover" else "orphan"
        self.metrics.takeovers.labels(kind=kind).inc()
        log.info(
            "call %s: taken over from %s (%s) with agent %s, attached in %.0f ms",
            record.call_id, record.owner, kind, agent, (time.monotonic() - t0) * 1000,
        )  # fmt: skip
        return True

    async def hand_over(self) -> None:
        """SIGTERM with a shared store: release every lock at once (other replicas hear it at once), keep
        answering until each call's successor is attached, then let go; bounded by ``handover_wait``."""
        if not self.store.shared:
            return
        self.closing = True
        if self._takeover is not None:
            self._takeover.cancel()
            await asyncio.wait({self._takeover})
        calls = [c for c in self.calls.values() if not c.lost]
        for call in calls:
            try:
                call.draining = await self.store.release(call.call_id, call.token)
            except StoreUnavailable:
                log.warning("call %s: cannot release (store unavailable); its lock will lapse", call.call_id)
            if call.draining:
                call.controller.counting = False
        pending = {c.call_id: c for c in calls if c.draining}
        if not pending:
            return
        log.info("handing over %d call(s)", len(pending))
        t0 = time.monotonic()
        deadline = t0 + self.settings.handover_wait
        while pending and time.monotonic() < deadline:
            for call_id, call in list(pending.items()):
                try:
                    record = await self.store.get(call_id)
                except StoreUnavailable:
                    continue
                if record is None or (record.owner != self.settings.replica_id and record.state == "live"):
                    del pending[call_id]
                    who = record.owner if record is not None else "nobody (ended)"
                    log.info("call %s: handed over to %s in %.0f ms", call_id, who, (time.monotonic() - t0) * 1000)
                    if call.task is not None:
                        call.task.cancel()
            if pending:
                await asyncio.sleep(HANDOVER_POLL_S)
        for call_id in pending:
            log.warning("call %s: no replica took it within %.1f s; leaving it for later", call_id,
                        self.settings.handover_wait)  # fmt: skip


@contextlib.asynccontextmanager
async def calls_lifetime(
    settings: ServerSettings, http: aiohttp.ClientSession, store: Store, metrics: ServerMetrics
) -> AsyncIterator[CallManager]:
    async with CallManager(settings, http, store, metrics) as manager:
        yield manager


def reservation_id() -> str:
    return f"pending:{uuid.uuid4().hex}"


async def read_offer(request: web.Request, settings: ServerSettings) -> str | web.Response:
    """The page's SDP offer, or the error response for a body that is not one."""
    if request.content_type != "application/sdp":
        return json_error(415, "sdp_required", "The offer must be sent as Content-Type: application/sdp.")
    body = await read_bounded(request, settings.max_offer_bytes)
    if body is None:
        return json_error(413, "request_too_large", f"SDP offers are limited to {settings.max_offer_bytes} bytes.")
    offer = body.decode("utf-8", errors="replace")
    if not offer.startswith("v=0") or "m=" not in offer:
        return json_error(400, "invalid_offer", "The body is not an SDP offer.")
    return offer
