"""Optional same-origin relay for the SDP exchange: ``POST /api/calls`` -> ``{api_base}/realtime/calls``.

The page normally POSTs its offer straight to the Realtime API (PROTOCOL.md 2.1), which needs CORS on
the upstream. The relay is for upstreams without CORS (our emulator, for now) and for deployments that
want the browser to talk to one origin only. It forwards ONLY the caller's own ephemeral key: the
server's API key is never attached, so the relay cannot spend anything a minted key could not.
"""

from __future__ import annotations

import asyncio
import json
import logging

import aiohttp
from aiohttp import web

from bridge.server.mint import QUOTA_MESSAGE, QUOTA_STATUS, out_of_quota, redact
from bridge.server.security import json_error

log = logging.getLogger(__name__)

MAX_OFFER_BYTES = 64 * 1024  # a browser offer is ~3-6 KB


async def read_bounded(request: web.Request, limit: int) -> bytes | None:
    """The request body, or None when it is longer than ``limit`` (chunked bodies included)."""
    if request.content_length is not None and request.content_length > limit:
        return None
    body = bytearray()
    async for chunk in request.content.iter_chunked(8192):
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


async def relay_call(
    request: web.Request, http: aiohttp.ClientSession, calls_url: str, timeout: float
) -> web.StreamResponse:
    """Forward one SDP offer with the caller's ``ek_`` key; pass the answer (201 + Location) back."""
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key.startswith("ek_"):
        return json_error(401, "ephemeral_key_required", "Send the ephemeral key as `Authorization: Bearer ek_…`.")
    if request.content_type != "application/sdp":
        return json_error(415, "sdp_required", "The offer must be sent as Content-Type: application/sdp.")
    offer = await read_bounded(request, MAX_OFFER_BYTES)
    if offer is None:
        return json_error(413, "request_too_large", f"SDP offers are limited to {MAX_OFFER_BYTES} bytes.")
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/sdp"}
    try:
        async with asyncio.timeout(timeout):
            async with http.post(calls_url, data=offer, headers=headers) as resp:
                status, text = resp.status, await resp.text()
                location = resp.headers.get("Location")
    except TimeoutError:
        return json_error(504, "upstream_timeout", "The Realtime API did not answer the call in time.")
    except aiohttp.ClientError as exc:
        log.warning("relay: upstream unreachable (%s)", type(exc).__name__)
        return json_error(502, "upstream_unreachable", "The server cannot reach the Realtime API.")
    log.info("relayed an SDP offer for %s: HTTP %d", request.remote, status)
    if status == 201:
        extra = {"Location": location} if location else {}
        return web.Response(status=201, text=text, content_type="application/sdp", headers=extra)
    if out_of_quota(text):
        return json_error(QUOTA_STATUS, "insufficient_quota", QUOTA_MESSAGE)
    message = "The Realtime API refused the call."
    detail = _error_message(text)
    if detail:
        message = f"The Realtime API refused the call: {redact(detail, key)}"
    return json_error(status if 400 <= status < 500 else 502, "upstream_refused", message)


def _error_message(text: str) -> str:
    try:
        data = json.loads(text)
    except ValueError:
        return ""
    err = data.get("error") if isinstance(data, dict) else None
    return str(err.get("message") or "") if isinstance(err, dict) else ""
