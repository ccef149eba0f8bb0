"""Id shapes the real service uses (PROTOCOL.md 4.1): prefix + 21 base62 characters, etc."""

from __future__ import annotations

import secrets
import string

_BASE62 = string.digits + string.ascii_letters


def _b62(n: int) -> str:
    return "".join(secrets.choice(_BASE62) for _ in range(n))


def event_id() -> str:
    return "event_" + _b62(21)


def session_id() -> str:
    return "sess_" + _b62(21)


def conversation_id() -> str:
    return "conv_" + _b62(21)


def response_id() -> str:
    return "resp_" + _b62(21)


def item_id() -> str:
    return "item_" + _b62(21)


def call_id() -> str:
    """Function-call id (``call_`` + 16)."""
    return "call_" + _b62(16)


def ephemeral_key() -> str:
    """Client secret value: ``ek_`` + 32 hex characters."""
    return "ek_" + secrets.token_hex(16)


def rtc_call_id() -> str:
    """WebRTC call id as in the Location header: ``rtc_`` + 32 hex."""
    return "rtc_" + secrets.token_hex(16)
