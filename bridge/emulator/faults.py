"""Faults the real service shows, as data (docs/emulator.md "Faults"); applied by ``bridge.emulator.admin``.

A :class:`Fault` names what happens to which open session and when. Session faults:

- ``drop``: the connection goes away with no goodbye (WS: TCP reset, no close frame; WebRTC: the peer closes);
- ``stall``: a silent death: nothing more is sent (events, pings, RTP) and nothing is closed;
- ``close``: a goodbye with a close ``code`` (1001/1011/3000/4000; WebRTC has no codes: the channel closes);
- ``error``: an ``error`` event with ``code`` / ``message`` / ``error_type``; the session goes on;
- ``expire``: the maximum session length now: ``session_expired``, then close 1001 (PROTOCOL.md 6).

Service faults: ``refuse`` (new keys, calls and sessions get HTTP ``status`` 500 or 429 for ``seconds``),
``restart`` (every session, key and call forgotten, sockets dropped), ``text_only`` (the opt-in trap "a
session seeded with assistant text items answers in text only", switched by ``enabled``) and
``random_drops`` (each session is dropped after an exponential random time of mean ``mean_s``; null: off).

:class:`Switches` holds the service-wide state; its clock and random source are injectable.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal, cast, get_args

if TYPE_CHECKING:
    from bridge.emulator.engine import Engine

FaultKind = Literal["drop", "stall", "close", "error", "expire", "refuse", "restart", "text_only", "random_drops"]
SESSION_KINDS: frozenset[str] = frozenset({"drop", "stall", "close", "error", "expire"})
CLOSE_CODES = (1001, 1011, 3000, 4000)
REFUSE_STATUSES = (429, 500)
_FIELDS = ("kind", "session", "after_s", "code", "message", "error_type", "reason", "seconds", "status", "enabled")


class FaultError(ValueError):
    """A fault request that makes no sense; one line for the caller (HTTP 400 on the admin API)."""


@dataclass(frozen=True)
class Fault:
    kind: FaultKind
    session: str | None = None  # a session id (sess_...) or call id (rtc_...); None: every open session
    after_s: float = 0.0  # from now (runtime) or from each session's start (CLI templates)
    code: int | str | None = None  # close: the WS close code; error: the error code
    message: str | None = None  # error: the message
    error_type: str = "invalid_request_error"  # error: the error type (e.g. server_error)
    reason: str = ""  # close: the close reason
    seconds: float = 0.0  # refuse: for how long
    status: int = 500  # refuse: 500 or 429
    enabled: bool = True  # text_only
    mean_s: float | None = None  # random_drops

    def as_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def _number(obj: dict[str, Any], key: str, default: float | None) -> float | None:
    value = obj.get(key, default)
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
        raise FaultError(f"'{key}' must be a number >= 0")
    return float(value)


def parse_fault(obj: Any) -> Fault:
    """A :class:`Fault` from its JSON form (the admin API's body), or :class:`FaultError`."""
    if not isinstance(obj, dict):
        raise FaultError('expected a JSON object like {"kind": "drop"}')
    raw_kind = obj.get("kind")
    if raw_kind not in get_args(FaultKind):
        raise FaultError(f"unknown fault kind {raw_kind!r}: use one of {', '.join(get_args(FaultKind))}")
    kind = cast(FaultKind, raw_kind)
    unknown = sorted(set(obj) - {*_FIELDS, "mean_s"})
    if unknown:
        raise FaultError(f"unknown field {unknown[0]!r}")
    session = obj.get("session")
    if session is not None and not isinstance(session, str):
        raise FaultError("'session' must be a session id, a call id or null")
    code = obj.get("code")
    if kind == "close":
        code = 1011 if code is None else code
        if code not in CLOSE_CODES:
            raise FaultError(f"close 'code' must be one of {CLOSE_CODES}")
    if kind == "error" and not (code is None or isinstance(code, str)):
        raise FaultError("error 'code' must be a string or null")
    status = obj.get("status", 500)
    if kind == "refuse" and status not in REFUSE_STATUSES:
        raise FaultError(f"refuse 'status' must be one of {REFUSE_STATUSES}")
    enabled = obj.get("enabled", True)
    if not isinstance(enabled, bool):
        raise FaultError("'enabled' must be true or false")
    for key in ("message", "reason", "error_type"):
        if key in obj and not isinstance(obj[key], str):
            raise FaultError(f"'{key}' must be a string")
    mean_s = _number(obj, "mean_s", None)
    if kind == "random_drops" and mean_s is not None and mean_s <= 0:
        raise FaultError("'mean_s' must be > 0 (or null to stop random drops)")
    return Fault(
        kind=kind,
        session=session,
        after_s=_number(obj, "after_s", 0.0) or 0.0,
        code=code,
        message=obj.get("message"),
        error_type=obj.get("error_type", "invalid_request_error"),
        reason=obj.get("reason", ""),
        seconds=_number(obj, "seconds", 0.0) or 0.0,
        status=int(status),
        enabled=enabled,
        mean_s=mean_s,
    )


def apply_to_session(engine: Engine, fault: Fault) -> None:
    """Apply one session fault (``SESSION_KINDS``) to an open session now."""
    if fault.kind == "drop":
        engine.drop()
    elif fault.kind == "stall":
        engine.stall()
    elif fault.kind == "close":
        close_code = fault.code if isinstance(fault.code, int) else 1011
        engine.close(close_code, fault.reason or CLOSE_REASONS.get(close_code, ""))
    elif fault.kind == "error":
        error_code = fault.code if isinstance(fault.code, str) else None
        engine.inject_error(error_code, fault.message or "Injected error.", fault.error_type)
    elif fault.kind == "expire":
        engine.expire()
    else:
        raise FaultError(f"{fault.kind!r} is not a session fault")


# Close reasons as the real service words them: "<type>.<code>" after fatal errors (PROTOCOL.md 3).
CLOSE_REASONS = {
    1001: "going away",
    1011: "server_error",
    3000: "invalid_request_error.invalid_api_key",
    4000: "invalid_request_error",
}


# Bodies as the real API sends them for these statuses (openai-python _exceptions: InternalServerError /
# RateLimitError carry this JSON; wording from the API's own server_error / rate_limit_exceeded errors).
def refusal_body(status: int, model: str) -> dict[str, Any]:
    if status == 429:
        message = (
            f"Rate limit reached for {model} in organization org-emulator on requests per min (RPM): "
            "Limit 100, Used 100, Requested 1. Please try again in 600ms. "
            "Visit https://platform.openai.com/account/rate-limits to learn more."
        )
        return {"error": {"message": message, "type": "requests", "param": None, "code": "rate_limit_exceeded"}}
    message = (
        "The server had an error while processing your request. Sorry about that! You can retry your request, "
        "or contact us through our help center at help.openai.com if the error persists."
    )
    return {"error": {"message": message, "type": "server_error", "param": None, "code": None}}


REFUSAL_HEADERS: dict[int, dict[str, str]] = {
    429: {"retry-after": "1", "x-ratelimit-limit-requests": "100", "x-ratelimit-remaining-requests": "0"},
    500: {},
}


@dataclass
class Switches:
    """Service-wide fault state (one per emulator; restart keeps it: it is the operator's, not the service's)."""

    clock: Callable[[], float] = time.monotonic
    rng: random.Random = field(default_factory=random.Random)
    refuse_until: float = 0.0
    refuse_status: int = 500
    text_only: bool = False
    random_mean_s: float | None = None
    templates: tuple[Fault, ...] = ()  # armed for every new session (CLI flags), after_s from its start

    def refusing(self) -> int | None:
        """The HTTP status new keys/calls/sessions get right now, or None."""
        return self.refuse_status if self.clock() < self.refuse_until else None

    def refuse(self, seconds: float, status: int) -> None:
        self.refuse_until = self.clock() + seconds
        self.refuse_status = status

    def random_drop_after(self) -> float | None:
        """When a new session should be dropped at random (seconds from its start), or None."""
        if self.random_mean_s is None:
            return None
        return self.rng.expovariate(1.0 / self.random_mean_s)

    def as_json(self) -> dict[str, Any]:
        left = self.refuse_until - self.clock()
        return {
            "refusing": {"status": self.refuse_status, "for_s": round(left, 3)} if left > 0 else None,
            "text_only": self.text_only,
            "random_drops_mean_s": self.random_mean_s,
            "every_session": [t.as_json() for t in self.templates],
        }
