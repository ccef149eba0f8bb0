"""aiohttp application factory for the emulator: routes under ``/v1``, typed state, clean shutdown."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import WSCloseCode, web

from bridge.emulator import admin, rest, ws
from bridge.emulator.auth import KeyStore
from bridge.emulator.behaviours import load_behaviour
from bridge.emulator.config import EmulatorConfig
from bridge.emulator.faults import Switches
from bridge.emulator.log import EventLog
from bridge.emulator.state import STATE, EmulatorState

log = logging.getLogger(__name__)


def make_app(config: EmulatorConfig | None = None) -> web.Application:
    """A ready-to-run emulator app. Raises ConfigError for a bad behaviour (e.g. unreadable script)."""
    config = config or EmulatorConfig()
    switches = Switches(
        rng=random.Random(config.fault_seed),
        text_only=config.text_only_after_assistant_text,
        random_mean_s=config.random_drop_mean_s,
        templates=config.session_faults,
    )
    if config.refuse_for_s > 0:
        switches.refuse(config.refuse_for_s, config.refuse_status)
    state = EmulatorState(
        config=config,
        behaviour=load_behaviour(config.behaviour, config.reply_seconds, quote_context=config.quote_context),
        keys=KeyStore(config),
        log=EventLog(config.log_path),
        switches=switches,
    )
    app = web.Application(client_max_size=32 * 1024 * 1024, middlewares=[_cors])
    app[STATE] = state
    app.router.add_post("/v1/realtime/client_secrets", rest.client_secrets)
    app.router.add_post("/v1/realtime/calls", rest.create_call)
    app.router.add_route("OPTIONS", "/v1/realtime/calls", _preflight)
    app.router.add_post("/v1/realtime/calls/{call_id}/hangup", rest.hangup)
    app.router.add_get("/v1/realtime", ws.realtime_ws)
    # the beta shape fails as the real service fails since 2026-05-12 (PROTOCOL.md top, 5)
    app.router.add_post("/v1/realtime", rest.beta_endpoint)
    app.router.add_post("/v1/realtime/sessions", rest.beta_endpoint)
    app.router.add_post("/v1/realtime/transcription_sessions", rest.beta_endpoint)
    if config.admin:
        admin.add_routes(app)
    app.on_shutdown.append(_on_shutdown)
    app.cleanup_ctx.append(_lifetime)
    return app


# Browsers POST their SDP offer to /v1/realtime/calls with an ephemeral key, cross-origin (PROTOCOL.md
# 2.1; the web page of `bridge serve` does it): answer the preflight and let the page read `Location`.
_CORS_PATHS = frozenset({"/v1/realtime/calls"})


def _cors_headers(request: web.Request) -> dict[str, str]:
    origin = request.headers.get("Origin")
    if origin is None or request.path not in _CORS_PATHS:
        return {}
    return {"Access-Control-Allow-Origin": origin, "Access-Control-Expose-Headers": "Location", "Vary": "Origin"}


async def _preflight(request: web.Request) -> web.Response:
    headers = {
        **_cors_headers(request),
        "Access-Control-Allow-Methods": "POST",
        "Access-Control-Allow-Headers": "authorization, content-type",
        "Access-Control-Max-Age": "600",
    }
    return web.Response(status=204, headers=headers)


@web.middleware
async def _cors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    response = await handler(request)
    if request.method != "OPTIONS":
        response.headers.update(_cors_headers(request))
    return response


async def _on_shutdown(app: web.Application) -> None:
    """Close every socket (1001 going away) and hang up every call before the server stops."""
    state = app[STATE]
    for sock in list(state.sockets):
        await sock.close(code=WSCloseCode.GOING_AWAY, message=b"server shutting down")
    calls = list(state.calls.values())
    state.calls.clear()
    if calls:
        await asyncio.gather(*(c.aclose() for c in calls), return_exceptions=True)


async def _lifetime(app: web.Application) -> AsyncIterator[None]:
    yield
    state = app[STATE]
    for handle in state.timers:
        handle.cancel()
    for task in list(state.tasks):
        task.cancel()
    if state.tasks:
        await asyncio.gather(*state.tasks, return_exceptions=True)
    engines = list(state.engines)
    state.engines.clear()
    if engines:
        await asyncio.gather(*(e.aclose() for e in engines), return_exceptions=True)
    state.log.close()
