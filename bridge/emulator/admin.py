"""The emulator's admin API, loopback only: see the open sessions, inject faults at run time (docs/emulator.md).

- ``GET  /_emulator/sessions``: ``{"sessions": [SESSION...], "calls": N, "keys": N}`` where SESSION is
  ``{"id", "call_id", "transport": "ws"|"webrtc", "type": "realtime"|"transcription", "model",
  "created_at", "expires_at", "sidebands", "stalled", "items": [{"id", "type", "role", "status", "text"}]}``;
- ``POST /_emulator/faults`` with a fault (``bridge.emulator.faults.Fault`` as JSON, e.g.
  ``{"kind": "drop", "session": "sess_...", "after_s": 2}``): ``{"applied": [session ids], "fault": {...}}``;
  400 with ``{"error": "..."}`` for a fault that makes no sense, 404 when ``session`` names no open session;
- ``GET  /_emulator/faults``: the service-wide switches (refusal, text-only trap, random drops);
- ``POST /_emulator/restart``: the ``restart`` fault (every session, key and call forgotten).

Requests from anything but 127.0.0.0/8, ::1 or an address given with ``--admin-allow`` get 403: the API
drops sessions and forgets keys.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from aiohttp import web

from bridge.emulator.engine import Engine
from bridge.emulator.faults import SESSION_KINDS, Fault, FaultError, parse_fault
from bridge.emulator.state import STATE, EmulatorState

log = logging.getLogger(__name__)

PREFIX = "/_emulator"


class UnknownSession(LookupError):
    pass


def item_text(item: dict[str, Any]) -> str:
    """What an item says, in words: message text or transcripts, a call's name and arguments, a tool's output."""
    kind = item.get("type")
    if kind == "function_call":
        return f"{item.get('name')}({item.get('arguments', '')})"
    if kind == "function_call_output":
        return str(item.get("output", ""))
    parts = []
    for part in item.get("content") or []:
        text = part.get("text") if part.get("type") in ("input_text", "output_text") else part.get("transcript")
        if text:
            parts.append(str(text))
    return " ".join(parts)


def describe(engine: Engine) -> dict[str, Any]:
    session = engine.session
    return {
        "id": engine.id,
        "call_id": engine.call_id,
        "transport": engine.transport,
        "type": session.get("type", "realtime"),
        "model": session.get("model"),
        "created_at": engine.created_at,
        "expires_at": session.get("expires_at"),
        "sidebands": engine.sidebands,
        "stalled": engine.lifetime.stalled,
        "items": [
            {
                "id": item["id"],
                "type": item.get("type"),
                "role": item.get("role"),
                "status": item.get("status"),
                "text": engine.heard_text(item["id"]) or item_text(item),
            }
            for item in engine.conversation.items()
        ],
    }


def sessions_json(state: EmulatorState) -> dict[str, Any]:
    return {
        "sessions": [describe(e) for e in state.open_engines()],
        "calls": len(state.calls),
        "keys": state.keys.minted,
    }


async def restart(state: EmulatorState) -> list[str]:
    """Forget every session, key and call; drop every connection (no goodbyes)."""
    engines, calls = state.forget_everything()
    for engine in engines:
        engine.drop()
    if calls:
        await asyncio.gather(*(call.aclose() for call in calls), return_exceptions=True)
    log.info("restarted: %d sessions and %d calls forgotten", len(engines), len(calls))
    return [e.id for e in engines]


async def apply_fault(state: EmulatorState, fault: Fault) -> list[str]:
    """Apply ``fault`` now (or arm it for ``after_s``); returns the session ids it concerns."""
    switches = state.switches
    if fault.kind in SESSION_KINDS:
        engines = state.open_engines(fault.session)
        if fault.session is not None and not engines:
            raise UnknownSession(fault.session)
        for engine in engines:
            state.schedule_fault(engine, fault, fault.after_s)
        return [e.id for e in engines]
    if fault.kind == "restart":
        if fault.after_s > 0:
            await asyncio.sleep(fault.after_s)
        return await restart(state)
    if fault.kind == "refuse":
        switches.refuse(fault.seconds, fault.status)
    elif fault.kind == "text_only":
        switches.text_only = fault.enabled
    elif fault.kind == "random_drops":
        switches.random_mean_s = fault.mean_s
    return []


def _allowed(request: web.Request) -> bool:
    remote = request.remote or ""
    return remote.startswith("127.") or remote == "::1" or remote in request.app[STATE].config.admin_allow


def _forbidden(request: web.Request) -> web.Response | None:
    if _allowed(request):
        return None
    return web.json_response({"error": "the emulator's admin API answers loopback clients only"}, status=403)


async def get_sessions(request: web.Request) -> web.Response:
    return _forbidden(request) or web.json_response(sessions_json(request.app[STATE]))


async def get_faults(request: web.Request) -> web.Response:
    return _forbidden(request) or web.json_response(request.app[STATE].switches.as_json())


async def post_fault(request: web.Request) -> web.Response:
    denied = _forbidden(request)
    if denied is not None:
        return denied
    try:
        fault = parse_fault(await request.json())
        applied = await apply_fault(request.app[STATE], fault)
    except (FaultError, json.JSONDecodeError) as exc:
        return web.json_response({"error": str(exc)}, status=400)
    except UnknownSession as exc:
        return web.json_response({"error": f"no open session or call {exc.args[0]!r}"}, status=404)
    return web.json_response({"applied": applied, "fault": fault.as_json()})


async def post_restart(request: web.Request) -> web.Response:
    denied = _forbidden(request)
    if denied is not None:
        return denied
    return web.json_response({"applied": await restart(request.app[STATE]), "fault": {"kind": "restart"}})


def add_routes(app: web.Application) -> None:
    app.router.add_get(f"{PREFIX}/sessions", get_sessions)
    app.router.add_get(f"{PREFIX}/faults", get_faults)
    app.router.add_post(f"{PREFIX}/faults", post_fault)
    app.router.add_post(f"{PREFIX}/restart", post_restart)
