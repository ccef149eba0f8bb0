"""Mint an ephemeral key upstream (``POST {api_base}/realtime/client_secrets``, PROTOCOL.md 1.1).

Upstream failures become :class:`MintError` with a status and a plain message for the page. Upstream
error text is only passed on for 400s (a bad session config), with anything key-shaped removed, because
an auth error's message quotes part of the key ("Incorrect API key provided: sk-ab***yz").
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from typing import Any

import aiohttp

from bridge.server.settings import ServerSettings

log = logging.getLogger(__name__)

_KEYISH = re.compile(r"\b(?:sk|ek|rk)[-_][A-Za-z0-9_\-*.]{4,}")


class MintError(Exception):
    """A mint that failed upstream: ``status`` and ``code`` for our JSON error, ``message`` in plain words."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def redact(text: str, *secrets: str | None) -> str:
    """``text`` with every given secret and anything that looks like an OpenAI key replaced."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    return _KEYISH.sub("[redacted]", text)


def public_session(session: dict[str, Any]) -> dict[str, Any]:
    """What a client may see of the upstream session: no instructions, tools or prompt."""
    audio = session.get("audio") or {}
    audio_in = audio.get("input") or {}
    audio_out = audio.get("output") or {}
    transcription = audio_in.get("transcription") or None
    return {
        "id": session.get("id"),
        "type": session.get("type", "realtime"),
        "model": session.get("model"),
        "output_modalities": session.get("output_modalities"),
        "voice": audio_out.get("voice"),
        "turn_detection": audio_in.get("turn_detection"),
        "transcription": (
            {"model": transcription.get("model"), "language": transcription.get("language")}
            if isinstance(transcription, dict)
            else None
        ),
    }


async def mint(http: aiohttp.ClientSession, settings: ServerSettings) -> dict[str, Any]:
    """One upstream mint: ``{value, expires_at, session}`` as the upstream returned them, or MintError."""
    body = {
        "expires_after": {"anchor": "created_at", "seconds": settings.key_ttl},
        "session": settings.session_config(),
    }
    url = f"{settings.api_base}/realtime/client_secrets"
    headers = {"Authorization": f"Bearer {settings.api_key}"}
    try:
        async with asyncio.timeout(settings.upstream_timeout):
            async with http.post(url, json=body, headers=headers) as resp:
                status = resp.status
                text = await resp.text()
    except TimeoutError as exc:
        log.warning("mint: upstream timed out after %.1f s", settings.upstream_timeout)
        raise MintError(504, "upstream_timeout", "The Realtime API did not answer in time.") from exc
    except aiohttp.ClientError as exc:
        log.warning("mint: upstream unreachable (%s)", type(exc).__name__)
        raise MintError(502, "upstream_unreachable", "The server cannot reach the Realtime API.") from exc
    if status != 200:
        raise _upstream_error(status, text, settings)
    try:
        data = json.loads(text)
        value, expires_at, session = data["value"], data["expires_at"], data.get("session") or {}
        if not isinstance(value, str) or not isinstance(expires_at, int | float):
            raise TypeError("bad types")
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("mint: upstream answered 200 with an unexpected body")
        raise MintError(502, "upstream_bad_response", "The Realtime API sent an unexpected answer.") from exc
    return {"value": value, "expires_at": int(expires_at), "session": session}


def _upstream_message(text: str) -> str:
    try:
        err = json.loads(text).get("error") or {}
        return str(err.get("message") or "")
    except (ValueError, AttributeError):
        return ""


def out_of_quota(text: str) -> bool:
    """Is this upstream error body the account being out of quota (``insufficient_quota`` as its code or
    type)? Unlike a rate limit, that stays so: clients must not retry it."""
    try:
        err = json.loads(text).get("error") or {}
        return "insufficient_quota" in (err.get("code"), err.get("type"))
    except (ValueError, AttributeError):
        return False


QUOTA_STATUS = 402
QUOTA_MESSAGE = "The Realtime API account behind this server is out of quota (check its plan and billing)."


def _upstream_error(status: int, text: str, settings: ServerSettings) -> MintError:
    log.warning("mint: upstream refused with HTTP %d", status)
    if status in (401, 403):
        return MintError(502, "upstream_auth", "The Realtime API refused the server's API key.")
    if out_of_quota(text):
        return MintError(QUOTA_STATUS, "insufficient_quota", QUOTA_MESSAGE)
    if status == 429:
        return MintError(503, "upstream_rate_limited", "The Realtime API is rate limiting; try again.")
    if 400 <= status < 500:
        detail = redact(_upstream_message(text), settings.api_key, settings.access_token)
        suffix = f": {detail}" if detail else "."
        return MintError(502, "upstream_rejected", f"The Realtime API rejected the session config{suffix}")
    return MintError(502, "upstream_error", f"The Realtime API failed (HTTP {status}).")
