"""The aiohttp app: ``GET /`` serves ``web/``, ``POST /api/client-secret`` mints ephemeral keys, and with
server-side agents ``POST /api/call`` creates browser calls (``bridge.server.calls``).

One shared upstream ``ClientSession`` lives in ``cleanup_ctx``; per-app state hangs off typed
``web.AppKey``s (no module globals). Every response, errors included, carries the security headers.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from types import MappingProxyType

import aiohttp
from aiohttp import web

from bridge.server.calls import CallRegistry, calls_lifetime, hangup_call, start_call
from bridge.server.mint import MintError, mint, public_session
from bridge.server.relay import MAX_OFFER_BYTES, read_bounded, relay_call
from bridge.server.security import RateLimiter, guard, guard_mint, json_error, origin_allowed, security_headers
from bridge.server.settings import ServerSettings

log = logging.getLogger(__name__)

SETTINGS = web.AppKey("settings", ServerSettings)
HTTP = web.AppKey("http", aiohttp.ClientSession)
LIMITER = web.AppKey("limiter", RateLimiter)
HEADERS = web.AppKey("headers", dict)
CALLS = web.AppKey("calls", CallRegistry)

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


async def _http_session(app: web.Application) -> AsyncIterator[None]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, connect=5)) as http:
        app[HTTP] = http
        yield


async def _calls_lifetime(app: web.Application) -> AsyncIterator[None]:
    """Registered after the HTTP session, so it is cleaned up first: sidebands end while it is open."""
    async with calls_lifetime(app[CALLS], app[SETTINGS], app[HTTP]):
        yield


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
    if request.path.startswith("/api/"):
        response.headers["Cache-Control"] = "no-store"


async def _client_secret(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    refused = guard_mint(request, settings, request.app[LIMITER])
    if refused is not None:
        log.info("mint refused for %s: HTTP %d", request.remote, refused.status)
        return refused
    if await read_bounded(request, settings.max_body_bytes) is None:  # the body itself is unused
        return json_error(413, "request_too_large", f"Bodies are limited to {settings.max_body_bytes} bytes.")
    try:
        minted = await mint(request.app[HTTP], settings)
    except MintError as exc:
        return json_error(exc.status, exc.code, exc.message)
    log.info("minted an ephemeral key for %s (ttl %d s)", request.remote, settings.key_ttl)
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
    refused = guard(request, settings, request.app[LIMITER], max_bytes=settings.max_offer_bytes, action="start calls")
    if refused is not None:
        log.info("call refused for %s: HTTP %d", request.remote, refused.status)
        return refused
    return await start_call(request, settings, request.app[HTTP], request.app[CALLS])


async def _hangup(request: web.Request) -> web.StreamResponse:
    """``POST /api/call/{id}/hangup``: origin and access token like minting, but never rate limited
    (ending a call spends nothing, and a user must always be able to stop one)."""
    settings = request.app[SETTINGS]
    if settings.agents is None:
        raise web.HTTPNotFound()
    refused = guard(request, settings, None, max_bytes=settings.max_body_bytes, action="end calls")
    if refused is not None:
        return refused
    return await hangup_call(request, settings, request.app[HTTP], request.app[CALLS])


async def _config(request: web.Request) -> web.StreamResponse:
    """What the page needs before it connects (no secrets; agent names are not secret, instructions are)."""
    settings = request.app[SETTINGS]
    agents = settings.agents
    return web.json_response(
        {
            "access_token_required": settings.access_token is not None,
            "greeting": settings.greeting,
            "offline": settings.offline,
            "agents": {"start": agents.start, "names": list(agents.agents)} if agents is not None else None,
        }
    )


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


def make_app(settings: ServerSettings) -> web.Application:
    """The token server + page. Does no I/O until the app starts (the upstream session opens then)."""
    app = web.Application(client_max_size=max(MAX_OFFER_BYTES, settings.max_offer_bytes), middlewares=[_errors])
    app[SETTINGS] = settings
    app[LIMITER] = RateLimiter(settings.rate_burst, settings.rate_period, settings.rate_max_clients)
    app[HEADERS] = security_headers(settings)
    app[CALLS] = CallRegistry(settings.max_calls)
    app.cleanup_ctx.append(_http_session)
    app.cleanup_ctx.append(_calls_lifetime)
    app.on_response_prepare.append(_add_headers)
    app.router.add_post("/api/client-secret", _client_secret)
    app.router.add_post("/api/calls", _calls)
    app.router.add_get("/api/config", _config)
    app.router.add_post("/api/call", _call)
    app.router.add_post("/api/call/{call_id}/hangup", _hangup)
    static = _static(settings.web_root)
    app.router.add_get("/", static)
    app.router.add_get("/{path:(?!api/).+}", static)
    return app
