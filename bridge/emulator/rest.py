"""REST routes: client secrets, WebRTC calls, hangup (PROTOCOL.md 1.1, 2.1, 2.4), and the beta-era
endpoints failing as the real service fails since the beta shut-down (PROTOCOL.md top, 1.2, 2.2, 5)."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from aiohttp import BodyPartReader, web

from bridge.emulator.auth import bearer, invalid_key_error
from bridge.emulator.engine_parts import ClientError
from bridge.emulator.faults import REFUSAL_HEADERS, refusal_body
from bridge.emulator.session_config import SessionError, check_request, new_session, session_from_secret
from bridge.emulator.state import STATE, EmulatorState
from bridge.emulator.validation import validate_named

log = logging.getLogger(__name__)


def error_response(
    status: int, message: str, code: str | None, param: str | None = None, etype: str = "invalid_request_error"
) -> web.Response:
    body = {"error": {"message": message, "type": etype, "param": param, "code": code}}
    return web.json_response(body, status=status)


def unauthorized(key: str | None) -> web.Response:
    return web.json_response({"error": invalid_key_error(key)}, status=401)


BETA_MESSAGE = "The Realtime Beta API is no longer supported. Please use /v1/realtime for the GA API."


def beta_disabled() -> web.Response:
    """The beta shape's answer since 2026-05-12: HTTP 400 ``beta_api_shape_disabled`` (PROTOCOL.md top)."""
    return error_response(400, BETA_MESSAGE, "beta_api_shape_disabled")


async def beta_endpoint(request: web.Request) -> web.Response:
    """``POST /v1/realtime?model=`` (beta SDP), ``/v1/realtime/sessions``, ``/v1/realtime/transcription_sessions``."""
    return beta_disabled()


def refused(state: EmulatorState, model: str | None = None) -> web.Response | None:
    """The refusal fault's answer (HTTP 500 / 429) while it lasts, else None."""
    status = state.switches.refusing()
    if status is None:
        return None
    body = refusal_body(status, model or state.config.default_model)
    return web.json_response(body, status=status, headers=REFUSAL_HEADERS[status])


def _session_for(state: EmulatorState, request_session: Any) -> dict[str, Any]:
    """A full session object from a ``RealtimeSessionCreateRequestGA`` or the transcription one (raises
    SessionError); the model rule is the WS's ``?model=`` rule (PROTOCOL.md 3)."""
    if request_session is not None:
        check_request(request_session)
    return new_session(request_session, state.config.default_model)


async def client_secrets(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if "OpenAI-Beta" in request.headers:
        return beta_disabled()
    key = bearer(request.headers.get("Authorization"))
    if not state.keys.is_api_key(key):
        return unauthorized(key)
    refusal = refused(state)
    if refusal is not None:
        return refusal
    try:
        body = await request.json() if request.can_read_body else {}
    except json.JSONDecodeError:
        return error_response(400, "We could not parse the JSON body of your request.", "invalid_json")
    try:
        validate_named("RealtimeCreateClientSecretRequest", body)
    except ClientError as err:
        return error_response(400, err.message, err.code, err.param)
    cfg = state.config
    seconds = (body.get("expires_after") or {}).get("seconds", cfg.ek_ttl_default)
    if not cfg.ek_ttl_min <= seconds <= cfg.ek_ttl_max:  # the schema's bounds, unless a test narrowed them
        return error_response(
            400,
            f"Invalid 'expires_after.seconds': expected a value in {cfg.ek_ttl_min}..{cfg.ek_ttl_max}, got {seconds}.",
            "integer_above_max_value" if seconds > cfg.ek_ttl_max else "integer_below_min_value",
            "expires_after.seconds",
        )
    session_req = body.get("session")
    try:
        session = _session_for(state, session_req)
    except SessionError as err:
        return error_response(400, err.message, err.code, err.param)
    secret = state.keys.mint(seconds, session)
    state.log.record("out", "rest", session["id"], {"type": "client_secret", "expires_at": secret.expires_at})
    return web.json_response({"value": secret.value, "expires_at": secret.expires_at, "session": session})


async def _read_offer(request: web.Request) -> tuple[str, Any]:
    """(sdp, session request or None) from an ``application/sdp`` body or the multipart form."""
    ctype = request.content_type
    if ctype == "application/sdp":
        return await request.text(), None
    if ctype == "multipart/form-data":
        sdp, session = None, None
        reader = await request.multipart()
        async for part in reader:
            if not isinstance(part, BodyPartReader):
                continue
            if part.name == "sdp":
                sdp = await part.text()
            elif part.name == "session":
                session = json.loads(await part.text())
            else:
                raise SessionError("unknown_parameter", f"Unknown parameter: '{part.name}'.", part.name)
        if sdp is None:
            raise SessionError("missing_required_parameter", "Missing required parameter: 'sdp'.", "sdp")
        return sdp, session
    raise SessionError(
        "invalid_request_error",
        f"Unsupported Content-Type {ctype!r}: use application/sdp or multipart/form-data.",
        None,
    )


async def create_call(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if "OpenAI-Beta" in request.headers:
        return beta_disabled()
    key = bearer(request.headers.get("Authorization"))
    secret = state.keys.secret(key)
    is_api_key = state.keys.is_api_key(key)
    if secret is None and not is_api_key:
        return unauthorized(key)
    refusal = refused(state)
    if refusal is not None:
        return refusal
    try:
        sdp, session_req = await _read_offer(request)
        if secret is not None:  # an ephemeral key carries its session (PROTOCOL.md 2.1)
            session = session_from_secret(secret.session)
        else:
            session = _session_for(state, session_req)
    except SessionError as err:
        return error_response(400, err.message, err.code, err.param)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return error_response(400, "The 'session' part is not valid JSON.", "invalid_json", "session")
    if "m=" not in sdp:
        return error_response(400, "Invalid SDP offer.", "invalid_offer", "sdp")
    try:
        from bridge.emulator import webrtc
    except ImportError:
        log.error("WebRTC answerer (bridge.emulator.webrtc) is not available")
        return error_response(500, "WebRTC is not available in this emulator build.", None, None, "server_error")
    engine = state.new_engine(session, "webrtc")
    engine.start()
    try:
        async with asyncio.timeout(10):
            answer, call = await webrtc.create_call(sdp, engine, state.config)
    except Exception:
        log.exception("answering a WebRTC offer failed")
        state.engines.discard(engine)
        await engine.aclose()
        return error_response(500, "Failed to answer the SDP offer.", None, None, "server_error")
    state.calls[call.id] = call
    state.watch_call(call)
    state.log.record("out", "rest", engine.id, {"type": "call.created", "call_id": call.id})
    return web.Response(
        status=201, text=answer, content_type="application/sdp", headers={"Location": f"/v1/realtime/calls/{call.id}"}
    )


async def hangup(request: web.Request) -> web.Response:
    state = request.app[STATE]
    key = bearer(request.headers.get("Authorization"))
    if not state.keys.is_api_key(key) and state.keys.secret(key) is None:
        return unauthorized(key)
    call_id = request.match_info["call_id"]
    call = state.calls.pop(call_id, None)
    if call is None:
        return error_response(404, f"Call '{call_id}' not found.", "call_not_found", "call_id")
    state.log.record("in", "rest", call.engine.id, {"type": "call.hangup", "call_id": call_id})
    await call.aclose()
    state.engines.discard(call.engine)
    return web.Response(status=200)
