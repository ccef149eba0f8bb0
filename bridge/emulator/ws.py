"""The realtime WebSocket (``GET /v1/realtime?model=``) and the sideband (``?call_id=``), PROTOCOL.md 3, 2.4.

The upgrade always succeeds (101); auth and request-shape problems arrive as one ``error`` event followed
by a close: 3000 for keys, 4000 for the request shape (missing/bad model, beta header).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from aiohttp import WSMsgType, web

from bridge.emulator.auth import bearer, invalid_key_error
from bridge.emulator.engine import Engine
from bridge.emulator.session_config import default_session, merge_session
from bridge.emulator.state import STATE, EmulatorState

log = logging.getLogger(__name__)

SEND_QUEUE_MAX = 20_000  # events; a client this far behind is dropped (close 1011) rather than buffered forever
_SUBPROTOCOL_KEY = "openai-insecure-api-key."
MODEL_PREFIXES = ("gpt-realtime", "gpt-4o-realtime", "gpt-4o-mini-realtime", "gpt-audio")


def _key_from(request: web.Request) -> str | None:
    key = bearer(request.headers.get("Authorization"))
    if key is not None:
        return key
    for proto in request.headers.get("Sec-WebSocket-Protocol", "").split(","):
        proto = proto.strip()
        if proto.startswith(_SUBPROTOCOL_KEY):
            return proto[len(_SUBPROTOCOL_KEY) :] or None
    return None


def _error_event(error: dict[str, Any]) -> str:
    from bridge.protocol import ids

    return json.dumps({"type": "error", "event_id": ids.event_id(), "error": {**error, "event_id": None}})


async def _reject(
    ws: web.WebSocketResponse, state: EmulatorState, error: dict[str, Any], code: int, reason: str
) -> web.WebSocketResponse:
    text = _error_event(error)
    state.log.record("out", "ws", None, json.loads(text))
    await ws.send_str(text)
    await ws.close(code=code, message=reason.encode())
    return ws


async def realtime_ws(request: web.Request) -> web.WebSocketResponse:
    state = request.app[STATE]
    ws = web.WebSocketResponse(protocols=("realtime",), heartbeat=state.config.ping_interval, max_msg_size=0)
    await ws.prepare(request)
    state.sockets.add(ws)
    try:
        return await _serve(request, ws, state)
    finally:
        state.sockets.discard(ws)


async def _serve(request: web.Request, ws: web.WebSocketResponse, state: EmulatorState) -> web.WebSocketResponse:
    if "OpenAI-Beta" in request.headers:
        err = {
            "type": "invalid_request_error",
            "code": "beta_api_shape_disabled",
            "param": None,
            "message": "The Realtime Beta API is no longer supported. Please use /v1/realtime for the GA API.",
        }
        return await _reject(ws, state, err, 4000, "invalid_request_error.beta_api_shape_disabled")
    key = _key_from(request)
    if key is None:
        err = {
            "type": "invalid_request_error",
            "code": None,
            "param": None,
            "message": "Missing bearer or basic authentication in header",
        }
        return await _reject(ws, state, err, 3000, "invalid_request_error")
    secret = state.keys.secret(key)
    if secret is None and not state.keys.is_api_key(key):
        return await _reject(ws, state, invalid_key_error(key), 3000, "invalid_request_error.invalid_api_key")
    call_id = request.query.get("call_id")
    if call_id is not None:
        return await _sideband(ws, state, call_id)
    model = request.query.get("model")
    if secret is not None:
        session = merge_session(
            default_session(secret.session["model"]),
            {k: v for k, v in secret.session.items() if k not in ("id", "object", "expires_at")},
        )
    else:
        if not model:
            err = {
                "type": "invalid_request_error",
                "code": "missing_model",
                "param": None,
                "message": "You must provide a model parameter, for example "
                "wss://api.openai.com/v1/realtime?model=gpt-realtime",
            }
            return await _reject(ws, state, err, 4000, "invalid_request_error.missing_model")
        session = default_session(model)
    if model and not model.startswith(MODEL_PREFIXES):
        err = {
            "type": "invalid_request_error",
            "code": "invalid_model",
            "param": None,
            "message": f"Model '{model}' is not supported in realtime mode.",
        }
        return await _reject(ws, state, err, 4000, "invalid_request_error.invalid_model")
    engine = state.new_engine(session, "ws")
    try:
        await _pump(ws, engine, via=None, first=None, start=True)
    finally:
        await engine.aclose()
        state.engines.discard(engine)
    return ws


async def _sideband(ws: web.WebSocketResponse, state: EmulatorState, call_id: str) -> web.WebSocketResponse:
    call = state.calls.get(call_id)
    if call is None:
        # The real error for an unknown call id is UNCONFIRMED; invalid_value on call_id + 4000 like bad models.
        err = {
            "type": "invalid_request_error",
            "code": "invalid_value",
            "param": "call_id",
            "message": f"Call '{call_id}' not found.",
        }
        return await _reject(ws, state, err, 4000, "invalid_request_error.invalid_value")
    # "Behaves exactly like any other Realtime API connection" (PROTOCOL.md 2.4): it starts with the
    # call's session.created (UNCONFIRMED for sideband), then sees every event of the call.
    await _pump(ws, call.engine, via="sideband", first=call.engine.session_created_event(), start=False)
    return ws


async def _pump(
    ws: web.WebSocketResponse, engine: Engine, *, via: str | None, first: dict[str, Any] | None, start: bool
) -> None:
    """Move events both ways until the client leaves or the engine closes the session."""
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=SEND_QUEUE_MAX)
    overflow = asyncio.Event()

    def listener(event: dict[str, Any]) -> None:
        try:
            queue.put_nowait(event)
        except asyncio.QueueFull:
            overflow.set()

    if first is not None:
        queue.put_nowait(first)
    engine.add_listener(listener, backlog=first is None)
    if start:
        engine.start()

    async def writer() -> None:
        while True:
            event = await queue.get()
            try:
                await ws.send_str(json.dumps(event, separators=(",", ":")))
            except ConnectionResetError:
                return  # the client went away; the reader ends too

    async def reader() -> None:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await engine.handle_client_event(msg.data, via=via)
            elif msg.type == WSMsgType.BINARY:
                await engine.handle_client_event(msg.data, via=via)

    async def closer() -> tuple[int, str]:
        closed = asyncio.ensure_future(engine.wait_closed())
        slow = asyncio.ensure_future(overflow.wait())
        try:
            done, _ = await asyncio.wait({closed, slow}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closed.cancel()
            slow.cancel()
        if slow in done:
            log.warning("session %s: client too slow, %d events queued; closing", engine.id, queue.qsize())
            return 1011, "send queue overflow"
        return engine.close_code, engine.close_reason

    tasks = [asyncio.ensure_future(writer()), asyncio.ensure_future(reader()), asyncio.ensure_future(closer())]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        if tasks[2] in done and not ws.closed:
            code, reason = tasks[2].result()
            # flush what the engine said last (e.g. the session_expired error) before closing
            tasks[0].cancel()
            await asyncio.gather(tasks[0], return_exceptions=True)
            while not queue.empty():
                await ws.send_str(json.dumps(queue.get_nowait(), separators=(",", ":")))
            await ws.close(code=code, message=reason.encode()[:120])
        for task in tasks:
            if task in done and not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
    finally:
        engine.remove_listener(listener)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
