"""Browser calls with server-side agents (``bridge serve --agents``): ``POST /api/call`` and hangup.

The page posts its SDP offer here instead of minting a key. We create the call upstream with the API key
(multipart ``sdp`` + the start agent's ``session``, PROTOCOL.md 2.1), attach the agents over the sideband
WebSocket (``?call_id=``, PROTOCOL.md 2.4) and only then hand the answer back, so no event of the call
(a function call in the first reply, say) happens before the tools are listening. The sideband runs as a
task the app owns until the call ends; it writes the server's transcript of the browser session.

The audio still flows browser <-> API directly. The API key never leaves the server: the page gets the
SDP answer and ``Location: /api/call/<call_id>``, and ends the call through us (``/hangup``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
from aiohttp import web

from bridge.agents.config import AgentSet
from bridge.agents.controller import AgentController
from bridge.agents.sideband import create_call, run_sideband
from bridge.errors import AuthError, BridgeError, ConnectError
from bridge.link import http as rest
from bridge.protocol import events as ev
from bridge.server.mint import redact
from bridge.server.relay import read_bounded
from bridge.server.security import json_error
from bridge.server.settings import ServerSettings
from bridge.transcript import TranscriptWriter

log = logging.getLogger(__name__)

ATTACH_WAIT_S = 5.0  # the sideband must be listening before the page gets its answer
HANGUP_WAIT_S = 5.0  # after an upstream hangup, how long the sideband may take to see the call end
SHUTDOWN_HANGUP_S = 3.0
_CALL_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_STATUS = re.compile(r"\((\d{3})\)")


class ServerController(AgentController):
    """The agents' controller plus one signal: the sideband has seen the call's session (it is attached)."""

    def __init__(self, agents: AgentSet) -> None:
        super().__init__(agents)
        self.attached = asyncio.Event()

    def on_event(self, e: ev.Event) -> None:
        super().on_event(e)
        if isinstance(e, ev.SessionChanged):
            self.attached.set()


@dataclass
class LiveCall:
    call_id: str
    transcript: Path
    controller: ServerController
    started: float = field(default_factory=time.monotonic)
    task: asyncio.Task[None] | None = None


class CallRegistry:
    """The server's live sideband sessions, bounded by ``limit`` (pending creations count too)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.calls: dict[str, LiveCall] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.refused = 0
        self._pending = 0

    def reserve(self) -> bool:
        if len(self.calls) + self._pending >= self.limit:
            self.refused += 1
            return False
        self._pending += 1
        return True

    def release(self) -> None:
        self._pending -= 1

    def __len__(self) -> int:
        return len(self.calls)


def transcript_path(directory: Path, call_id: str, now: float | None = None) -> Path:
    """``<dir>/<UTC stamp>-<call_id>.jsonl``."""
    stamp = datetime.fromtimestamp(time.time() if now is None else now, UTC).strftime("%Y%m%dT%H%M%SZ")
    return directory / f"{stamp}-{call_id}.jsonl"


def _upstream_failure(exc: BridgeError, settings: ServerSettings) -> web.Response:
    """A failed call creation in this server's error shape (no key material, PROTOCOL.md 6)."""
    text = redact(str(exc), settings.api_key, settings.access_token)
    if isinstance(exc, AuthError):
        return json_error(502, "upstream_auth", "The Realtime API refused the server's API key.")
    if isinstance(exc, ConnectError):
        if "timed out" in text:
            return json_error(504, "upstream_timeout", "The Realtime API did not answer the call in time.")
        return json_error(502, "upstream_unreachable", "The server cannot reach the Realtime API.")
    found = _STATUS.search(text)
    status = int(found.group(1)) if found else 0
    if status == 429:
        return json_error(503, "upstream_rate_limited", "The Realtime API is rate limiting or out of quota.")
    if 400 <= status < 500:
        detail = text.split(": ", 1)[-1]
        return json_error(502, "upstream_rejected", f"The Realtime API refused the call: {detail}")
    return json_error(502, "upstream_error", "The Realtime API failed to create the call.")


async def start_call(
    request: web.Request, settings: ServerSettings, http: aiohttp.ClientSession, registry: CallRegistry
) -> web.StreamResponse:
    """Body checks, capacity, create the call upstream, attach the agents; 201 + SDP answer."""
    if request.content_type != "application/sdp":
        return json_error(415, "sdp_required", "The offer must be sent as Content-Type: application/sdp.")
    body = await read_bounded(request, settings.max_offer_bytes)
    if body is None:
        return json_error(413, "request_too_large", f"SDP offers are limited to {settings.max_offer_bytes} bytes.")
    offer = body.decode("utf-8", errors="replace")
    if not offer.startswith("v=0") or "m=" not in offer:
        return json_error(400, "invalid_offer", "The body is not an SDP offer.")
    if not registry.reserve():
        return json_error(
            429,
            "too_many_calls",
            f"The server is busy ({registry.limit} calls running); try again in a minute.",
            headers={"Retry-After": "60"},
        )
    try:
        return await _create_and_attach(request, settings, http, registry, offer)
    finally:
        registry.release()


async def _create_and_attach(
    request: web.Request,
    settings: ServerSettings,
    http: aiohttp.ClientSession,
    registry: CallRegistry,
    offer: str,
) -> web.StreamResponse:
    assert settings.agents is not None
    try:
        async with asyncio.timeout(settings.upstream_timeout):
            answer, call_id = await create_call(
                http, settings.api_base, settings.api_key, offer, settings.call_session_config()
            )
    except TimeoutError:
        log.warning("call creation: upstream timed out after %.1f s", settings.upstream_timeout)
        return json_error(504, "upstream_timeout", "The Realtime API did not answer the call in time.")
    except BridgeError as exc:
        log.warning("call creation failed: %s", redact(str(exc), settings.api_key, settings.access_token))
        return _upstream_failure(exc, settings)
    if not _CALL_ID.match(call_id):
        await rest.hangup(http, settings.api_base, call_id, settings.api_key)
        return json_error(502, "upstream_bad_response", "The Realtime API sent an unexpected call id.")

    call = LiveCall(call_id, transcript_path(settings.transcripts_dir, call_id), ServerController(settings.agents))
    task = asyncio.create_task(_run_sideband(call, settings, http, registry), name=f"sideband-{call_id}")
    call.task = task
    registry.calls[call_id] = call
    registry.tasks.add(task)
    task.add_done_callback(registry.tasks.discard)
    attached = asyncio.create_task(call.controller.attached.wait())
    try:
        await asyncio.wait({attached, task}, timeout=ATTACH_WAIT_S, return_when=asyncio.FIRST_COMPLETED)
    finally:
        attached.cancel()
    if not call.controller.attached.is_set():
        # The agents are not listening: a call without them would answer no tool and hand off to no one.
        log.warning("call %s: the sideband did not attach within %.0f s; hanging up", call_id, ATTACH_WAIT_S)
        await _end(call, settings, http)
        return json_error(502, "sideband_failed", "The server could not attach its agents to the call.")
    log.info(
        "call %s for %s: agents attached (start %s), transcript %s",
        call_id,
        request.remote,
        settings.agents.start,
        call.transcript,
    )
    return web.Response(
        status=201,
        text=answer,
        content_type="application/sdp",
        headers={"Location": f"/api/call/{call_id}", "X-Call-Id": call_id},
    )


async def _run_sideband(
    call: LiveCall, settings: ServerSettings, http: aiohttp.ClientSession, registry: CallRegistry
) -> None:
    """One call's agents, until the call ends or this task is cancelled; always closes the transcript."""
    assert settings.agents is not None
    writer = TranscriptWriter(call.transcript)
    try:
        writer.open()
        await run_sideband(
            http, settings.api_base, settings.api_key, call.call_id, settings.agents, writer, controller=call.controller
        )
    except BridgeError as exc:
        log.warning("call %s: sideband ended: %s", call.call_id, redact(str(exc), settings.api_key))
    except OSError as exc:
        log.warning("call %s: cannot write the transcript %s: %s", call.call_id, call.transcript, exc.strerror)
    finally:
        writer.close()
        registry.calls.pop(call.call_id, None)
        ctrl = call.controller
        log.info(
            "call %s ended after %.0f s: agent %s, %d handoffs, %d tool calls; transcript %s",
            call.call_id,
            time.monotonic() - call.started,
            ctrl.current.name,
            len(ctrl.history),
            ctrl.tool_calls,
            call.transcript,
        )


async def _end(call: LiveCall, settings: ServerSettings, http: aiohttp.ClientSession) -> bool:
    """Hang the call up upstream, give the sideband a moment to see it end, then cancel it."""
    ok = await rest.hangup(http, settings.api_base, call.call_id, settings.api_key)
    task = call.task
    if task is not None and not task.done():
        done, _ = await asyncio.wait({task}, timeout=HANGUP_WAIT_S)
        if not done:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    return ok


async def hangup_call(
    request: web.Request, settings: ServerSettings, http: aiohttp.ClientSession, registry: CallRegistry
) -> web.StreamResponse:
    """End one of OUR calls (the page cannot: it holds no key that may hang up)."""
    call_id = request.match_info["call_id"]
    call = registry.calls.get(call_id)
    if call is None:
        return json_error(404, "call_not_found", "No such call is running on this server.")
    upstream_ok = await _end(call, settings, http)
    log.info("call %s hung up by %s (upstream %s)", call_id, request.remote, "ok" if upstream_ok else "already gone")
    return web.json_response({"call_id": call_id, "ended": True})


@contextlib.asynccontextmanager
async def calls_lifetime(
    registry: CallRegistry, settings: ServerSettings, http: aiohttp.ClientSession
) -> AsyncIterator[None]:
    """On shutdown: hang up every live call (best effort, bounded), then cancel and await the sidebands."""
    try:
        yield
    finally:
        live = list(registry.calls.values())
        if live:
            log.info("shutting down: hanging up %d call(s)", len(live))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(SHUTDOWN_HANGUP_S):
                    await asyncio.gather(
                        *(rest.hangup(http, settings.api_base, c.call_id, settings.api_key) for c in live),
                        return_exceptions=True,
                    )
        tasks = list(registry.tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
