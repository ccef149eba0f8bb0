"""The realtime WebSocket (``GET /v1/realtime?model=`` | ``?intent=transcription``) and the sideband
(``?call_id=``), PROTOCOL.md 3, 2.4.

The upgrade always succeeds (101); auth and request-shape problems arrive as one ``error`` event followed
by a close: 3000 for keys, 4000 for the request shape (missing/bad model, beta header). Only a refusal fault
(HTTP 500/429, ``bridge.emulator.faults``) answers before the upgrade, as an overloaded service does.

One connection is one :func:`_pump`: a reader, a writer and a pinger in a TaskGroup, and the session's
:class:`~bridge.emulator.lifetime.Lifetime` deciding how it ends (close frame, TCP reset, or silence).
Pings carry 4 random bytes every ``ping_interval`` (PROTOCOL.md 3: "PING every ~20.26 s, 4-byte payload").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import struct
from typing import Any

from aiohttp import WSMsgType, web

from bridge.emulator.auth import bearer, invalid_key_error
from bridge.emulator.engine import Engine
from bridge.emulator.faults import REFUSAL_HEADERS, refusal_body
from bridge.emulator.session_config import (
    SessionError,
    check_model,
    default_transcription_session,
    session_from_secret,
)
from bridge.emulator.session_config import default_session as realtime_session
from bridge.emulator.state import STATE, EmulatorState
from bridge.protocol import ids

log = logging.getLogger(__name__)

SEND_QUEUE_MAX = 20_000  # events; a client this far behind is dropped (close 1011) rather than buffered forever
_SUBPROTOCOL_KEY = "openai-insecure-api-key."
_BETA_MESSAGE = "The Realtime Beta API is no longer supported. Please use /v1/realtime for the GA API."


def _key_from(request: web.Request) -> str | None:
    key = bearer(request.headers.get("Authorization"))
    if key is not None:
        return key
    for proto in request.headers.get("Sec-WebSocket-Protocol", "").split(","):
        proto = proto.strip()
        if proto.startswith(_SUBPROTOCOL_KEY):
            return proto[len(_SUBPROTOCOL_KEY) :] or None
    return None


def _error(code: str | None, message: str, param: str | None = None) -> dict[str, Any]:
    return {"type": "invalid_request_error", "code": code, "message": message, "param": param}


async def _reject(
    ws: web.WebSocketResponse, state: EmulatorState, error: dict[str, Any], code: int, reason: str
) -> web.WebSocketResponse:
    event = {"type": "error", "event_id": ids.event_id(), "error": {**error, "event_id": None}}
    state.log.record("out", "ws", None, event)
    await ws.send_str(json.dumps(event, separators=(",", ":")))
    await ws.close(code=code, message=reason.encode())
    return ws


def reset_connection(request: web.Request) -> None:
    """Drop the TCP connection with a reset, no close frame (the client sees 1006 / ECONNRESET)."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


async def realtime_ws(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    status = state.switches.refusing()
    if status is not None:
        body = refusal_body(status, request.query.get("model") or state.config.default_model)
        return web.json_response(body, status=status, headers=REFUSAL_HEADERS[status])
    ws = web.WebSocketResponse(protocols=("realtime",), autoping=False, max_msg_size=0)
    await ws.prepare(request)
    state.sockets.add(ws)
    try:
        return await _serve(request, ws, state)
    finally:
        state.sockets.discard(ws)


async def _serve(request: web.Request, ws: web.WebSocketResponse, state: EmulatorState) -> web.WebSocketResponse:
    if "OpenAI-Beta" in request.headers:
        err = _error("beta_api_shape_disabled", _BETA_MESSAGE)
        return await _reject(ws, state, err, 4000, "invalid_request_error.beta_api_shape_disabled")
    key = _key_from(request)
    if key is None:
        err = _error(None, "Missing bearer or basic authentication in header")
        return await _reject(ws, state, err, 3000, "invalid_request_error")
    secret = state.keys.secret(key)
    if secret is None and not state.keys.is_api_key(key):
        return await _reject(ws, state, invalid_key_error(key), 3000, "invalid_request_error.invalid_api_key")
    call_id = request.query.get("call_id")
    if call_id is not None:  # "model is not used" with call_id (PROTOCOL.md 2.4)
        return await _sideband(request, ws, state, call_id)
    model = request.query.get("model")
    intent = request.query.get("intent")
    try:
        if model:
            check_model(model)
        if secret is not None:
            session = session_from_secret(secret.session)
        elif intent == "transcription":
            session = default_transcription_session()
        elif not model:
            message = "You must provide a model parameter, for example wss://api.openai.com/v1/realtime?model=gpt-realtime-1.5"
            err = _error("missing_model", message)
            return await _reject(ws, state, err, 4000, "invalid_request_error.missing_model")
        else:
            session = realtime_session(model)
    except SessionError as err:
        return await _reject(ws, state, _error(err.code, err.message), 4000, f"invalid_request_error.{err.code}")
    engine = state.new_engine(session, "ws")
    try:
        await _pump(request, ws, engine, via=None, first=None)
    finally:
        await engine.aclose()
        state.engines.discard(engine)
    return ws


async def _sideband(
    request: web.Request, ws: web.WebSocketResponse, state: EmulatorState, call_id: str
) -> web.WebSocketResponse:
    call = state.calls.get(call_id)
    if call is None or call.engine.closed:
        # The real error for an unknown call id is UNCONFIRMED; invalid_value on call_id + 4000 like bad models.
        err = _error("invalid_value", f"Call '{call_id}' not found.", "call_id")
        return await _reject(ws, state, err, 4000, "invalid_request_error.invalid_value")
    # "Behaves exactly like any other Realtime API connection" (PROTOCOL.md 2.4): it starts with the
    # call's session.created (UNCONFIRMED for sideband), then sees every event of the call. A sideband that
    # dies (reset, its process killed) is detached in the finally below; another may attach and take over.
    engine = call.engine
    engine.sidebands += 1
    try:
        await _pump(request, ws, engine, via="sideband", first=engine.session_created_event())
    finally:
        engine.sidebands -= 1
    return ws


async def _pump(
    request: web.Request, ws: web.WebSocketResponse, engine: Engine, *, via: str | None, first: dict[str, Any] | None
) -> None:
    """Move events both ways until the client leaves or the session ends (see the module docstring)."""
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=SEND_QUEUE_MAX)
    overflow = asyncio.Event()
    client_gone = asyncio.Event()
    lifetime = engine.lifetime

    def listener(event: dict[str, Any]) -> None:
        try:
            queue.put_nowait(event)
        except asyncio.QueueFull:
            overflow.set()

    async def send(event: dict[str, Any]) -> None:
        await ws.send_str(json.dumps(event, separators=(",", ":")))

    async def writer() -> None:
        while True:
            event = await queue.get()
            if lifetime.stalled:
                return
            try:
                await send(event)
            except ConnectionResetError:
                client_gone.set()
                return

    async def reader() -> None:
        try:
            async for msg in ws:
                if lifetime.stalled:
                    continue  # a dead server reads nothing and answers nothing
                if msg.type == WSMsgType.PING:
                    await ws.pong(msg.data)
                elif msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    await engine.handle_client_event(msg.data, via=via)
        except ConnectionResetError:
            pass
        client_gone.set()  # the client closed or vanished (not set when cancelled: the session ended first)

    async def pinger() -> None:
        while not lifetime.stalled:
            await asyncio.sleep(engine.config.ping_interval)
            if lifetime.stalled or ws.closed:
                return
            with contextlib.suppress(ConnectionResetError):
                await ws.ping(os.urandom(4))

    if first is not None:
        queue.put_nowait(first)
    engine.add_listener(listener, backlog=first is None)
    if first is None:
        engine.start()
    try:
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(writer()), tg.create_task(reader()), tg.create_task(pinger())]
            ended = tg.create_task(lifetime.wait_closed())
            slow = tg.create_task(overflow.wait())
            gone = tg.create_task(client_gone.wait())
            await asyncio.wait({ended, slow, gone}, return_when=asyncio.FIRST_COMPLETED)
            for task in (*tasks, ended, slow, gone):
                task.cancel()
        if client_gone.is_set() or ws.closed:
            return
        if overflow.is_set():
            log.warning("session %s: client too slow, %d events queued; closing", engine.id, queue.qsize())
            await ws.close(code=1011, message=b"send queue overflow")
        elif lifetime.abrupt:
            reset_connection(request)
        else:
            while not queue.empty():  # flush what the session said last (e.g. session_expired)
                await send(queue.get_nowait())
            await ws.close(code=lifetime.code, message=lifetime.reason.encode()[:120])
    except ConnectionResetError:
        pass
    finally:
        engine.remove_listener(listener)
