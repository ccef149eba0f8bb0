"""Abuse protection for the mint endpoint and strict headers for every response.

A public mint endpoint spends the key owner's money, so minting is guarded by (in order) an Origin check
for browsers, a small body limit, the caller's identity (an optional shared bearer access token, or a
per-kiosk token with a shared store), then the limits of :mod:`bridge.server.store` (per-client and
per-token buckets, call caps, minutes per day).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from bridge.server.settings import ServerSettings, normalize_origin


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class RateLimiter:
    """Token bucket per client key: ``burst`` requests at once, refilled at one per ``period`` seconds.

    The table is bounded (``max_clients``); when full, the least recently seen client is forgotten
    (which only ever gives that client a fresh bucket) and ``evicted`` counts it.
    """

    def __init__(
        self,
        burst: int,
        period: float,
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.burst = burst
        self.period = period
        self.max_clients = max_clients
        self.evicted = 0
        self.refused = 0
        self._clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def peek(self, key: str) -> float:
        """The tokens ``key`` has now, without spending one or touching the table."""
        bucket = self._buckets.get(key)
        if bucket is None:
            return float(self.burst)
        return min(float(self.burst), bucket.tokens + (self._clock() - bucket.stamp) / self.period)

    def wait(self, key: str) -> int:
        """Whole seconds until ``key`` has a token again (at least 1)."""
        return max(1, math.ceil((1.0 - self.peek(key)) * self.period))

    def take(self, key: str) -> float:
        """Spend one token for ``key``: 0.0 when allowed, else the seconds until a token is available."""
        now = self._clock()
        bucket = self._buckets.pop(key, None)
        if bucket is None:
            bucket = _Bucket(tokens=float(self.burst), stamp=now)
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.stamp) / self.period)
        bucket.stamp = now
        self._buckets[key] = bucket
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
            self.evicted += 1
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        self.refused += 1
        return (1.0 - bucket.tokens) * self.period


def json_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    """The one error shape of this server: ``{"error": {"code", "message"}}``, never any key material."""
    return web.json_response({"error": {"code": code, "message": message}}, status=status, headers=headers)


def client_key(request: web.Request, trust_forwarded: bool) -> str:
    """The address a rate-limit bucket is keyed on.

    Behind a reverse proxy every request comes from the proxy; with ``trust_forwarded`` the rightmost
    ``X-Forwarded-For`` entry (the one the proxy itself appended) is used instead.
    """
    if trust_forwarded:
        forwarded = request.headers.get("X-Forwarded-For", "")
        last = forwarded.split(",")[-1].strip()
        if last:
            return last
    return request.remote or "unknown"


def origin_allowed(request: web.Request, allowed: tuple[str, ...]) -> bool:
    """Browsers always send ``Origin`` on a cross-origin or POST fetch; tools (kiosks, curl) send none.

    Same-origin means the Origin's host:port equals the request's ``Host`` (so it also holds behind an
    HTTPS-terminating proxy that keeps ``Host``). ``allowed`` adds exact origins.
    """
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    normalized = normalize_origin(origin)
    if normalized is None:
        return False
    if normalized in allowed:
        return True
    host = request.headers.get("Host", "").lower()
    return bool(host) and normalized.split("://", 1)[1] == host


def access_token_ok(request: web.Request, expected: str | None) -> bool:
    """``Authorization: Bearer <access token>`` in constant time; always true when no token is configured."""
    if expected is None:
        return True
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(value.strip().encode(), expected.encode())


@dataclass(frozen=True)
class Identity:
    """Who is asking, as far as this process can tell without the store.

    ``credential`` is "shared" for the shared access token; a bearer that is not it may be a kiosk's token
    (``token_hash``, resolved by the store); ``anonymous_ok`` says whether an unknown token may go on as
    anonymous (no access token configured, no ``--require-token``).
    """

    credential: str | None
    token_hash: str | None
    anonymous_ok: bool


def bearer(request: web.Request) -> str | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    value = value.strip()
    return value if scheme.lower() == "bearer" and value else None


def identify(request: web.Request, settings: ServerSettings, kiosks: bool) -> Identity | None:
    """The request's identity, or None when it must be refused with 401 (``access_token_required``).

    ``kiosks``: per-kiosk tokens exist (a shared store); any other bearer token is looked up there.
    """
    token = bearer(request)
    if token is not None and settings.access_token is not None and access_token_ok(request, settings.access_token):
        return Identity("shared", None, True)
    anonymous_ok = not settings.tokens_required
    if token is not None and kiosks:
        return Identity(None, hashlib.sha256(token.encode()).hexdigest(), anonymous_ok)
    return Identity(None, None, True) if anonymous_ok else None


def precheck(request: web.Request, settings: ServerSettings, *, max_bytes: int, action: str) -> web.Response | None:
    """The checks that need no store: the Origin, then the declared body size."""
    if not origin_allowed(request, settings.allowed_origins):
        return json_error(403, "origin_not_allowed", f"This page's origin may not {action} here.")
    if request.content_length is not None and request.content_length > max_bytes:
        return json_error(413, "request_too_large", f"Bodies are limited to {max_bytes} bytes.")
    return None


def content_security_policy(settings: ServerSettings) -> str:
    """No inline script or style anywhere; the page may only talk to us and to the Realtime API."""
    return "; ".join(
        [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data:",
            "media-src 'self' blob: mediastream:",
            f"connect-src 'self' {settings.api_origin}",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )


def security_headers(settings: ServerSettings) -> dict[str, str]:
    """Headers added to every response (pages, files, API answers and errors alike)."""
    return {
        "Content-Security-Policy": content_security_policy(settings),
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Cross-Origin-Opener-Policy": "same-origin",
        "Cross-Origin-Resource-Policy": "same-origin",
        "Permissions-Policy": "microphone=(self), camera=(), geolocation=(), payment=()",
    }
