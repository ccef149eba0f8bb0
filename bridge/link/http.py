"""REST calls to the Realtime API (or a token server): mint an ephemeral key, post SDP, hang up.

Errors are mapped here, at the boundary, to one-line :mod:`bridge.errors` (httpx ``map_httpcore_exceptions``
style). No message ever contains a key.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import aiohttp

from bridge.config import Credentials
from bridge.errors import AuthError, ConnectError, ProtocolError, QuotaError, ServiceError

log = logging.getLogger(__name__)

HTTP_TIMEOUT = aiohttp.ClientTimeout(total=15, connect=5)


@dataclass(frozen=True)
class EphemeralKey:
    value: str
    expires_at: int
    calls_url: str | None = None  # a token server may say where to post SDP

    def __repr__(self) -> str:
        return f"EphemeralKey(expires_at={self.expires_at}, calls_url={self.calls_url!r})"


def _host(url: str) -> str:
    return urlparse(url).netloc or url


async def _error_body(resp: aiohttp.ClientResponse) -> tuple[str | None, str]:
    """``(code, "code: message")`` from an OpenAI-style JSON error body, else ``(None, status line)``."""
    try:
        body = await resp.json(content_type=None)
    except (aiohttp.ContentTypeError, json.JSONDecodeError, ValueError):
        return None, f"HTTP {resp.status} {resp.reason or ''}".strip()
    err = body.get("error", body) if isinstance(body, dict) else {}
    if not isinstance(err, dict):
        return None, str(err)
    code = err.get("code") or err.get("type")
    code = code if isinstance(code, str) else None
    msg = err.get("message") or ""
    return code, (f"{code}: {msg}" if code else msg or f"HTTP {resp.status}")


async def check(resp: aiohttp.ClientResponse, what: str, expect: int = 200) -> None:
    """Raise the right BridgeError for a non-``expect`` response: 401/403 a rejected key, 429 with
    ``insufficient_quota`` an empty account (both final); other 429s and 5xx the service being busy or
    failing (worth another try); anything else a refused request."""
    if resp.status == expect:
        return
    code, detail = await _error_body(resp)
    line = f"{what} failed ({resp.status}): {detail}"
    if resp.status in (401, 403):
        raise AuthError(f"{what} rejected ({resp.status}): {detail}")
    if code == "insufficient_quota":
        raise QuotaError(line)
    if resp.status == 429 or resp.status >= 500:
        raise ServiceError(line)
    raise ProtocolError(line)


def client_error(exc: Exception, url: str) -> ConnectError:
    """One readable line: ``cannot reach HOST: Connection refused`` rather than aiohttp's repr."""
    reason = ""
    if isinstance(exc, aiohttp.ClientConnectorError):
        reason = exc.os_error.strerror or ""
    reason = reason or str(exc) or exc.__class__.__name__
    return ConnectError(f"cannot reach {_host(url)}: {reason}")


async def mint_key(
    http: aiohttp.ClientSession, creds: Credentials, session: dict[str, Any], ttl_s: int = 600
) -> EphemeralKey:
    """An ephemeral key carrying ``session``: from the token server when set, else from the API."""
    if creds.token_url:
        url = creds.token_url
        headers = {"Authorization": f"Bearer {creds.token_secret}"} if creds.token_secret else {}
        body: dict[str, Any] = {}
        what = "token server"
    else:
        if not creds.api_key:
            raise AuthError("no OPENAI_API_KEY set (put it in .env, or use --token-url)")
        url = f"{creds.api_base}/realtime/client_secrets"
        headers = {"Authorization": f"Bearer {creds.api_key}"}
        body = {"expires_after": {"anchor": "created_at", "seconds": ttl_s}, "session": session}
        what = "client secret request"
    try:
        async with http.post(url, json=body, headers=headers, timeout=HTTP_TIMEOUT) as resp:
            await check(resp, what)
            data = await resp.json(content_type=None)
    except aiohttp.ClientError as exc:
        raise client_error(exc, url) from exc
    except TimeoutError as exc:
        raise ConnectError(f"cannot reach {_host(url)}: timed out") from exc
    value = data.get("value") if isinstance(data, dict) else None
    if not isinstance(value, str) or not value:
        raise ProtocolError(f"{what} returned no key")
    return EphemeralKey(value, int(data.get("expires_at") or 0), data.get("calls_url"))


async def post_sdp(http: aiohttp.ClientSession, calls_url: str, key: str, offer_sdp: str) -> tuple[str, str]:
    """POST the SDP offer (ephemeral-key variant); returns ``(answer_sdp, call_id)`` from the 201 + Location."""
    headers = {
        "Authorization": f"Bearer {key}",
        "Content-Type": "application/sdp",
        "Accept": "application/sdp",
    }
    try:
        async with http.post(calls_url, data=offer_sdp, headers=headers, timeout=HTTP_TIMEOUT) as resp:
            await check(resp, "SDP exchange", expect=201)
            answer = await resp.text()
            location = resp.headers.get("Location", "")
    except aiohttp.ClientError as exc:
        raise client_error(exc, calls_url) from exc
    except TimeoutError as exc:
        raise ConnectError(f"cannot reach {_host(calls_url)}: SDP exchange timed out") from exc
    call_id = location.rstrip("/").rsplit("/", 1)[-1]  # PROTOCOL.md 2.1: relative URL, last segment
    if not answer.startswith("v=0"):
        raise ProtocolError("SDP exchange returned no SDP answer")
    return answer, call_id


async def hangup(http: aiohttp.ClientSession, api_base: str, call_id: str, key: str) -> bool:
    """Best effort ``POST /realtime/calls/{id}/hangup``; closing the peer ends the call anyway."""
    url = f"{api_base}/realtime/calls/{call_id}/hangup"
    try:
        async with http.post(url, headers={"Authorization": f"Bearer {key}"}, timeout=HTTP_TIMEOUT) as resp:
            ok = resp.status == 200
            if not ok:
                log.info("hangup of %s answered %s", call_id, resp.status)
            return ok
    except (aiohttp.ClientError, TimeoutError) as exc:
        log.info("hangup of %s failed: %s", call_id, exc.__class__.__name__)
        return False
