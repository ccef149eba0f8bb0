"""The aiohttp app: ``GET /`` serves ``web/``, ``POST /api/client-secret`` mints ephemeral keys, with
server-side agents ``POST /api/call`` creates browser calls (``bridge.server.calls``); ``GET /healthz``
and ``GET /metrics`` for load balancers and Prometheus.

Lifetimes in ``cleanup_ctx`` (cleaned up in reverse): the upstream ``ClientSession``, the store (memory or
Redis), the call manager. ``on_shutdown`` runs after the listening sockets closed: with a shared store the
calls are handed over to other replicas there. Per-app state hangs off typed ``web.AppKey``s (no module
globals). Every response, errors included, carries the security headers; every request logs one line.
"""

from __future__ import annotations

import contextvars
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from types import MappingProxyType
from typing import Any

import aiohttp
from aiohttp import web

from bridge.server.calls import CallManager, read_offer, reservation_id
from bridge.server.logs import log_request
from bridge.server.metrics import CONTENT_TYPE, ServerMetrics
from bridge.server.mint import MintError, mint, public_session
from bridge.server.relay import MAX_OFFER_BYTES, read_bounded, relay_call
from bridge.server.resume import RESUME_HEADER
from bridge.server.security import client_key, identify, json_error, origin_allowed, precheck, security_headers
from bridge.server.settings import ServerSettings
from bridge.server.store import (
    AdmitRequest,
    Admitted,
    Kind,
    Limits,
    MemoryStore,
    Refusal,
    Store,
    StoreUnavailable,
    refusal,
)

log = logging.getLogger(__name__)

SETTINGS = web.AppKey("settings", ServerSettings)
HTTP = web.AppKey("http", aiohttp.ClientSession)
STORE: web.AppKey[Store] = web.AppKey("store")
CALLS = web.AppKey("calls", CallManager)
METRICS = web.AppKey("metrics", ServerMetrics)
HEADERS = web.AppKey("headers", dict)

# Served file types; anything else under web/ is a 404. `.js` must be a JavaScript MIME type or the
# browser refuses to run it as a module (and nosniff forbids guessing).
MIME_TYPES = MappingProxyType(
    {
        ".html": "text/html; charset=utf-8",
        ".js": "text/javascript; charset=utf-8",
        ".css": "text/css; charset=utf-8",
        ".svg": "image/svg+xml",
        ".png": "image/png",
        ".ico": "image/x-icon",
        ".webmanifest": "application/manifest+json",
    }
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# The kiosk behind the current request, for its log line (set by the handler, read by the access-log
# middleware in the same task; aiohttp >= 3.10 has no typed per-request keys).
_KIOSK: contextvars.ContextVar[str | None] = contextvars.ContextVar("bridge_kiosk", default=None)


def limits(settings: ServerSettings) -> Limits:
    return Limits(
        rate_burst=settings.rate_burst,
        rate_period=settings.rate_period,
        token_burst=settings.token_burst,
        token_period=settings.token_period,
        max_calls=settings.max_calls,
        fleet_seconds_per_day=settings.fleet_minutes_per_day * 60,
        reservation_lease=settings.upstream_timeout + 15.0,
    )


def make_store(settings: ServerSettings) -> Store:
    """Memory for one machine; Redis (imported only then) with ``--redis-url``. No I/O yet."""
    if settings.redis_url is None:
        return MemoryStore(limits(settings), max_clients=settings.rate_max_clients)
    from bridge.server.redis_store import RedisStore, connect

    client = connect(settings.redis_url, f"bridge-serve:{settings.replica_id}")
    return RedisStore(client, settings.redis_prefix, settings.replica_id, limits(settings), settings.call_ttl)


async def _http_session(app: web.Application) -> AsyncIterator[None]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, connect=5)) as http:
        app[HTTP] = http
        yield


async def _store_lifetime(app: web.Application) -> AsyncIterator[None]:
    store = app[STORE]
    if store.shared:
        try:
            await store.ping()
        except StoreUnavailable as exc:
            log.warning("the shared store does not answer yet (%s): refusing to mint until it does", exc)
    try:
        yield
    finally:
        await store.aclose()


async def _calls_lifetime(app: web.Application) -> AsyncIterator[None]:
    """Registered after the HTTP session and the store, so it is cleaned up first."""
    async with CallManager(app[SETTINGS], app[HTTP], app[STORE], app[METRICS]) as manager:
        app[CALLS] = manager
        yield


async def _hand_over(app: web.Application) -> None:
    """After the sites stopped accepting: pass our calls to other replicas (shared store only)."""
    if CALLS in app:
        await app[CALLS].hand_over()


@web.middleware
async def _access_log(request: web.Request, handler: Handler) -> web.StreamResponse:
    """One line per request: method, path (never the query), status, time, client, refusal reason."""
    t0 = time.perf_counter()
    _KIOSK.set(None)
    status = 500
    response: web.StreamResponse | None = None
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        settings = request.app[SETTINGS]
        log_request(
            {
                "method": request.method,
                "path": request.path,
                "status": status,
                "ms": (time.perf_counter() - t0) * 1000,
                "client": client_key(request, settings.trust_forwarded),
                "reason": _error_code(response),
                "kiosk": _KIOSK.get(),
                "call_id": request.match_info.get("call_id") or _header(response, "X-Call-Id"),
                "replica": settings.replica_id if settings.fleet else None,
            }
        )


def _error_code(response: web.StreamResponse | None) -> str | None:
    if not isinstance(response, web.Response) or response.status < 400 or response.content_type != "application/json":
        return None
    try:
        body = response.body
        code = json.loads(body if isinstance(body, bytes | str) else b"")["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None
    return str(code)


def _header(response: web.StreamResponse | None, name: str) -> str | None:
    return response.headers.get(name) if response is not None else None


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """API routes answer JSON errors; nothing unexpected leaks a traceback or a secret to the client."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if not request.path.startswith("/api/") or exc.status < 400:
            raise
        codes = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}
        code = codes.get(exc.status, "bad_request")
        return json_error(exc.status, code, exc.reason)


async def _add_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.update(request.app[HEADERS])
    if request.path.startswith("/api/") or request.path in ("/healthz", "/metrics"):
        response.headers["Cache-Control"] = "no-store"


def _refuse(request: web.Request, r: Refusal) -> web.Response:
    request.app[METRICS].refusals.labels(reason=r.code).inc()
    return json_error(r.status, r.code, r.message, r.headers)


async def _admit(request: web.Request, kind: Kind, reservation: str | None = None) -> Admitted | web.Response:
    """Identity, then every shared limit in one store round trip; the refusal response or the admission."""
    settings, store = request.app[SETTINGS], request.app[STORE]
    ident = identify(request, settings, kiosks=store.shared)
    if ident is None:
        return _refuse(request, refusal("access_token_required"))
    req = AdmitRequest(
        kind=kind,
        client=client_key(request, settings.trust_forwarded),
        credential=ident.credential,
        token_hash=ident.token_hash,
        reservation=reservation,
        anonymous_ok=ident.anonymous_ok,
    )
    try:
        verdict = await store.admit(req)
    except StoreUnavailable:
        request.app[METRICS].store_errors.inc()
        return _refuse(request, refusal("store_unavailable"))
    if isinstance(verdict, Refusal):
        return _refuse(request, verdict)
    _KIOSK.set(verdict.kiosk)
    return verdict


async def _client_secret(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    checked = precheck(request, settings, max_bytes=settings.max_body_bytes, action="request keys")
    if checked is not None:
        return checked
    admitted = await _admit(request, "mint")
    if isinstance(admitted, web.Response):
        return admitted
    if await read_bounded(request, settings.max_body_bytes) is None:  # the body itself is unused
        return json_error(413, "request_too_large", f"Bodies are limited to {settings.max_body_bytes} bytes.")
    metrics = request.app[METRICS]
    try:
        with metrics.upstream.labels(op="mint").time():
            minted = await mint(request.app[HTTP], settings)
    except MintError as exc:
        try:
            await request.app[STORE].refund_mint(admitted.kiosk)
        except StoreUnavailable:
            pass  # the mint stays counted as usage; nothing was spent upstream
        return json_error(exc.status, exc.code, exc.message)
    metrics.mints.inc()
    return web.json_response(
        {
            "value": minted["value"],
            "expires_at": minted["expires_at"],
            "session": public_session(minted["session"]),
            "calls_url": _calls_url(request, settings),
        }
    )


def _calls_url(request: web.Request, settings: ServerSettings) -> str:
    """Absolute, so kiosks (``bridge run --token-url``) can use it as is; the relay is on this origin."""
    if not settings.relay_calls:
        return settings.upstream_calls_url
    scheme = request.scheme
    if settings.trust_forwarded:
        forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
        scheme = forwarded if forwarded in ("http", "https") else scheme
    return f"{scheme}://{request.host}/api/calls"


async def _calls(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    if not settings.relay_calls:
        raise web.HTTPNotFound()
    if not origin_allowed(request, settings.allowed_origins):
        return json_error(403, "origin_not_allowed", "This page's origin may not start calls here.")
    return await relay_call(request, request.app[HTTP], settings.upstream_calls_url, settings.upstream_timeout)


async def _call(request: web.Request) -> web.StreamResponse:
    """``POST /api/call``: the page's SDP offer -> a call with the server's agents (only with --agents)."""
    settings = request.app[SETTINGS]
    if settings.agents is None:
        raise web.HTTPNotFound()
    checked = precheck(request, settings, max_bytes=settings.max_offer_bytes, action="start calls")
    if checked is not None:
        return checked
    reservation = reservation_id()
    admitted = await _admit(request, "call", reservation)
    if isinstance(admitted, web.Response):
        return admitted
    store = request.app[STORE]
    response: web.StreamResponse | None = None
    try:
        offer = await read_offer(request, settings)
        if isinstance(offer, web.Response):
            response = offer
        else:
            resume = request.headers.get(RESUME_HEADER)
            response = await request.app[CALLS].create(request, offer, admitted.kiosk, reservation, resume)
        return response
    finally:
        if response is None or response.status != 201:
            try:
                await store.cancel(reservation, admitted.kiosk)
            except StoreUnavailable:
                pass  # the reservation's lease lapses by itself


async def _hangup(request: web.Request) -> web.StreamResponse:
    """``POST /api/call/{id}/hangup``: origin and identity like minting, but never rate limited (ending a
    call spends nothing, and a user must always be able to stop one). Works on any replica."""
    settings, store = request.app[SETTINGS], request.app[STORE]
    if settings.agents is None:
        raise web.HTTPNotFound()
    checked = precheck(request, settings, max_bytes=settings.max_body_bytes, action="end calls")
    if checked is not None:
        return checked
    ident = identify(request, settings, kiosks=store.shared)
    if ident is None:
        return _refuse(request, refusal("access_token_required"))
    kiosk = None
    if ident.token_hash is not None:
        try:
            kiosk = await store.whois(ident.token_hash)
        except StoreUnavailable:
            return _refuse(request, refusal("store_unavailable"))
        if kiosk is None and not ident.anonymous_ok:
            return _refuse(request, refusal("access_token_required"))
        _KIOSK.set(kiosk)
    return await request.app[CALLS].hangup(request.match_info["call_id"], kiosk, ident.credential == "shared")


async def _config(request: web.Request) -> web.StreamResponse:
    """What the page needs before it connects (no secrets; agent names are not secret, instructions are)."""
    settings = request.app[SETTINGS]
    agents = settings.agents
    return web.json_response(
        {
            "access_token_required": settings.tokens_required,
            "greeting": settings.greeting,
            "offline": settings.offline,
            "agents": {"start": agents.start, "names": list(agents.agents)} if agents is not None else None,
        }
    )


async def _healthz(request: web.Request) -> web.StreamResponse:
    """Liveness plus the shared store's reachability: 503 when Redis does not answer (this replica then
    refuses to mint), so a load balancer's health check takes it out of rotation."""
    settings, store = request.app[SETTINGS], request.app[STORE]
    redis = "off"
    if store.shared:
        try:
            await store.ping()
            redis = "ok"
        except StoreUnavailable:
            redis = "down"
    manager = request.app.get(CALLS)
    ok = redis != "down" and manager is not None and manager.running
    body: dict[str, Any] = {
        "status": "ok" if ok else "unavailable",
        "replica": settings.replica_id,
        "redis": redis,
        "calls": len(manager) if manager is not None else 0,
    }
    return web.json_response(body, status=200 if ok else 503)


async def _metrics(request: web.Request) -> web.StreamResponse:
    return web.Response(body=request.app[METRICS].render(), headers={"Content-Type": CONTENT_TYPE})


def _static(root: Path) -> Handler:
    root = root.resolve()

    async def handler(request: web.Request) -> web.StreamResponse:
        name = request.match_info.get("path") or "index.html"
        path = (root / name).resolve()
        mime = MIME_TYPES.get(path.suffix)
        if mime is None or not path.is_relative_to(root) or not path.is_file():
            raise web.HTTPNotFound()
        return web.FileResponse(path, headers={"Content-Type": mime, "Cache-Control": "no-cache"})

    return handler


def make_app(settings: ServerSettings, store: Store | None = None) -> web.Application:
    """The token server + page. Does no I/O until the app starts (the upstream session opens then).

    ``store``: shared state (default: :func:`make_store` from the settings); closed with the app.
    """
    app = web.Application(
        client_max_size=max(MAX_OFFER_BYTES, settings.max_offer_bytes), middlewares=[_access_log, _errors]
    )
    app[SETTINGS] = settings
    app[STORE] = store if store is not None else make_store(settings)
    app[METRICS] = ServerMetrics()
    app[HEADERS] = security_headers(settings)
    app.cleanup_ctx.append(_http_session)
    app.cleanup_ctx.append(_store_lifetime)
    app.cleanup_ctx.append(_calls_lifetime)
    app.on_shutdown.append(_hand_over)
    app.on_response_prepare.append(_add_headers)
    app.router.add_post("/api/client-secret", _client_secret)
    app.router.add_post("/api/calls", _calls)
    app.router.add_get("/api/config", _config)
    app.router.add_post("/api/call", _call)
    app.router.add_post("/api/call/{call_id}/hangup", _hangup)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/metrics", _metrics)
    static = _static(settings.web_root)
    app.router.add_get("/", static)
    app.router.add_get("/{path:(?!api/).+}", static)
    return app
