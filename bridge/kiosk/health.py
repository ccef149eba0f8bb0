"""The operator view: what the kiosk is doing (``GET /healthz``) and how it has done (``GET /metrics``).

:class:`KioskStatus` is the one object the kiosk updates: its state (:class:`KioskState`), devices, last
error, and events (``on_wake``, ``on_call_start``, ``on_call_end``, ``observe_response_ms``, ...). It
keeps its own ``prometheus_client`` ``CollectorRegistry`` (never the global one, so two kiosks in one
process or a test suite never share counters) and writes one log line per state change.

:func:`health_app` is an aiohttp application serving both routes; :func:`serve_health` runs it on
127.0.0.1 unless told otherwise (the endpoints have no authentication: metrics and device names are for the
operator, so put a reverse proxy with auth in front before exposing them):

- ``/healthz``: JSON ``{"state", "healthy", "reason", "since", "uptime_s", "devices", "last_error",
  "calls_today", "wakes_today", "budget"}``; status 200 while healthy, 503 when :meth:`KioskStatus.unhealthy`
  gives a reason (the same test that decides whether the systemd watchdog is fed). ``no_device`` and
  ``budget_spent`` are states the kiosk handles by itself, so they are reported but are not unhealthy.
- ``/metrics``: Prometheus text (``prometheus_client.generate_latest``); the list is in docs/kiosk.md.

Threads: every method may be called from the event loop; :meth:`KioskStatus.mic_alive` is also safe from
the capture thread (one float store). ``prometheus_client`` metrics are thread-safe.
"""

from __future__ import annotations

import enum
import ipaddress
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Literal

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Enum, Gauge, Histogram, generate_latest

from bridge.errors import ConfigError

log = logging.getLogger(__name__)


class KioskState(enum.StrEnum):
    STARTING = "starting"
    """Opening the devices (the first time on them, measuring the speakers' echo); not listening yet."""
    IDLE = "idle"
    """Microphone open, local VAD listening, no call, nothing sent anywhere."""
    CONNECTING = "connecting"
    """Woken: minting a key and opening the call; audio is kept in the backlog."""
    IN_CALL = "in_call"
    RECONNECTING = "reconnecting"
    """The call's connection dropped and is being re-established."""
    NO_DEVICE = "no_device"
    """A microphone or speaker is missing; reopening with backoff."""
    BUDGET_SPENT = "budget_spent"
    """Listening, but the call budget allows no call now (:mod:`bridge.kiosk.budget`)."""


CallEndReason = Literal["idle", "max_call", "budget", "device_lost", "error", "shutdown", "remote"]
"""Why a call ended: ``idle`` (``--hangup-after`` with nobody speaking), ``max_call`` (the per-call cap),
``budget`` (the sliding-hour budget ran out), ``device_lost``, ``error``, ``shutdown`` (SIGTERM),
``remote`` (the server ended it)."""
CALL_END_REASONS: tuple[str, ...] = ("idle", "max_call", "budget", "device_lost", "error", "shutdown", "remote")
WakeSource = Literal["vad", "wake_word"]
AecState = Literal["absent", "off", "on"]

RESPONSE_BUCKETS_S = (0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0)
BARGEIN_BUCKETS_S = (0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0)


@dataclass(frozen=True)
class Device:
    role: Literal["input", "output"]
    name: str
    present: bool


class KioskStatus:
    """Status and metrics of one kiosk (see module docstring)."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        mic_stale_s: float = 10.0,
        budget_remaining: Callable[[], float | None] | None = None,
        on_change: Callable[[KioskState, KioskState, str | None], None] | None = None,
    ) -> None:
        self._clock = clock
        self._wall = wall
        self.mic_stale_s = mic_stale_s
        self._budget_remaining = budget_remaining
        self._on_change = on_change
        self.started = clock()
        self.state = KioskState.STARTING
        self.state_reason: str | None = None
        self.state_since = self.started
        self.devices: dict[str, Device] = {}
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self._mic_alive_at: float | None = None
        self._mic_opened_at = self.started
        self._day = self._today()
        self.calls_today = 0
        self.wakes_today = 0
        self._call_started: float | None = None

        r = self.registry = CollectorRegistry(auto_describe=True)
        p = "bridge_kiosk_"
        self.m_state = Enum(p + "state", "Current kiosk state", states=[s.value for s in KioskState], registry=r)
        self.m_calls = Counter(p + "calls", "Calls ended, by reason", ["reason"], registry=r)
        self.m_call_seconds = Counter(p + "call_seconds", "Seconds spent in calls (what the bill counts)", registry=r)
        self.m_wakes = Counter(p + "wakes", "Wakes that opened a call, by source", ["source"], registry=r)
        self.m_false_wakes = Counter(p + "false_wakes", "Calls that ended with no user transcript", registry=r)
        self.m_refused = Counter(p + "wakes_refused", "Wakes not acted on, by reason", ["reason"], registry=r)
        self.m_reconnects = Counter(p + "reconnects", "Reconnections of a live call", registry=r)
        self.m_errors = Counter(p + "errors", "Errors reported by the kiosk", registry=r)
        self.m_response = Histogram(
            p + "response_latency_seconds",
            "End of user speech to first reply audio at the device",
            buckets=RESPONSE_BUCKETS_S,
            registry=r,
        )
        self.m_bargein = Histogram(
            p + "bargein_seconds",
            "Start of user speech over a reply to its playback stopped",
            buckets=BARGEIN_BUCKETS_S,
            registry=r,
        )
        self.m_overflows = Counter(p + "mic_overflows", "Microphone input lost (late callbacks)", registry=r)
        self.m_underruns = Counter(p + "playout_underruns", "Speaker playout ran dry mid-reply", registry=r)
        self.m_aec = Enum(p + "aec_state", "Echo cancellation", states=["absent", "off", "on"], registry=r)
        self.m_aec_erle = Gauge(p + "aec_erle_db", "Echo return loss enhancement (when AEC reports it)", registry=r)
        self.m_device = Gauge(p + "device_present", "1 while the device is open", ["role"], registry=r)
        self.m_uptime = Gauge(p + "uptime_seconds", "Seconds since the kiosk started", registry=r)
        self.m_uptime.set_function(lambda: self._clock() - self.started)
        self.m_budget = Gauge(
            p + "budget_remaining_seconds", "Call seconds left in the sliding hour (-1: no limit)", registry=r
        )
        self.m_budget.set_function(self._budget_metric)
        self.m_state.state(self.state.value)
        self.m_aec.state("absent")
        for reason in CALL_END_REASONS:  # export zeros so rate() works from the first scrape
            self.m_calls.labels(reason)
        for source in ("vad", "wake_word"):
            self.m_wakes.labels(source)
        self.m_refused.labels("budget")

    # ------------------------------------------------------------------------------------------ updates

    def set_state(self, state: KioskState, reason: str | None = None) -> None:
        """Enter ``state``; one log line per change (``reason``: one line, e.g. "budget: 29.5 of 30 min").
        Setting the current state again only updates the reason shown on ``/healthz`` (no log line)."""
        if state == self.state:
            self.state_reason = reason
            return
        old = self.state
        self.state, self.state_reason, self.state_since = state, reason, self._clock()
        self.m_state.state(state.value)
        if reason:
            log.info("kiosk: %s -> %s (%s)", old.value, state.value, reason)
        else:
            log.info("kiosk: %s -> %s", old.value, state.value)
        if self._on_change is not None:
            self._on_change(old, state, reason)

    def set_device(self, role: Literal["input", "output"], name: str, present: bool) -> None:
        self.devices[role] = Device(role, name, present)
        self.m_device.labels(role).set(1 if present else 0)
        if role == "input":  # a (re)opened microphone gets the same grace period as at start
            self._mic_alive_at = None
            self._mic_opened_at = self._clock()

    def mic_alive(self, at: float | None = None) -> None:
        """A microphone frame arrived (call it per frame or every few; safe from the capture thread)."""
        self._mic_alive_at = self._clock() if at is None else at

    def on_wake(self, source: WakeSource = "vad") -> None:
        self._roll_day()
        self.wakes_today += 1
        self.m_wakes.labels(source).inc()

    def on_wake_refused(self, reason: Literal["budget"] = "budget") -> None:
        self.m_refused.labels(reason).inc()

    def on_call_start(self) -> None:
        self._roll_day()
        self.calls_today += 1
        self._call_started = self._clock()

    def on_call_end(self, reason: CallEndReason, user_turns: int, seconds: float | None = None) -> None:
        """A call ended. ``user_turns``: user transcripts it produced (0 makes it a false wake);
        ``seconds``: its length (default: since :meth:`on_call_start`)."""
        if seconds is None:
            seconds = self._clock() - self._call_started if self._call_started is not None else 0.0
        self._call_started = None
        self.m_calls.labels(reason).inc()
        self.m_call_seconds.inc(max(0.0, seconds))
        if user_turns == 0:
            self.m_false_wakes.inc()

    def on_reconnect(self) -> None:
        self.m_reconnects.inc()

    def on_error(self, message: str) -> None:
        """One line for ``/healthz`` (never an API key: pass the user-facing ``str(BridgeError)``)."""
        self.last_error = message.splitlines()[0][:300] if message else "error"
        self.last_error_at = self._wall()
        self.m_errors.inc()

    def observe_response_ms(self, ms: float) -> None:
        """The transcript's ``latency`` line ``response_ms``."""
        self.m_response.observe(ms / 1000)

    def observe_bargein_ms(self, ms: float) -> None:
        """The transcript's ``latency`` line ``bargein_ms``."""
        self.m_bargein.observe(ms / 1000)

    def add_mic_overflows(self, n: int) -> None:
        if n > 0:
            self.m_overflows.inc(n)

    def add_playout_underruns(self, n: int) -> None:
        if n > 0:
            self.m_underruns.inc(n)

    def set_aec(self, state: AecState, erle_db: float | None = None) -> None:
        self.m_aec.state(state)
        if erle_db is not None:
            self.m_aec_erle.set(erle_db)

    # ------------------------------------------------------------------------------------------ reading

    def unhealthy(self) -> str | None:
        """Why the kiosk is not healthy (one line), or None. Unhealthy means restarting the process is the
        best next step: the microphone is supposed to be open but has produced nothing for
        ``mic_stale_s``. Missing devices and a spent budget are handled by the kiosk itself."""
        if self.state is KioskState.NO_DEVICE:
            return None
        last = self._mic_alive_at if self._mic_alive_at is not None else self._mic_opened_at
        quiet = self._clock() - last
        return f"no microphone frame for {quiet:.0f} s" if quiet > self.mic_stale_s else None

    def snapshot(self) -> dict[str, Any]:
        """The ``/healthz`` document."""
        self._roll_day()
        reason = self.unhealthy()
        remaining = self._budget_remaining() if self._budget_remaining is not None else None
        return {
            "state": self.state.value,
            "state_reason": self.state_reason,
            "healthy": reason is None,
            "reason": reason,
            "since_s": round(self._clock() - self.state_since, 1),
            "uptime_s": round(self._clock() - self.started, 1),
            "devices": [{"role": d.role, "name": d.name, "present": d.present} for d in self.devices.values()],
            "last_error": self.last_error,
            "last_error_at": datetime.fromtimestamp(self.last_error_at).astimezone().isoformat(timespec="seconds")
            if self.last_error_at is not None
            else None,
            "calls_today": self.calls_today,
            "wakes_today": self.wakes_today,
            "budget_remaining_s": None if remaining is None else round(remaining, 1),
        }

    def _budget_metric(self) -> float:
        remaining = self._budget_remaining() if self._budget_remaining is not None else None
        return -1.0 if remaining is None else remaining

    def _today(self) -> date:
        return datetime.fromtimestamp(self._wall()).date()  # the kiosk's local day

    def _roll_day(self) -> None:
        today = self._today()
        if today != self._day:
            self._day, self.calls_today, self.wakes_today = today, 0, 0


STATUS_KEY = web.AppKey("kiosk_status", KioskStatus)


async def _healthz(request: web.Request) -> web.Response:
    doc = request.app[STATUS_KEY].snapshot()
    return web.json_response(doc, status=200 if doc["healthy"] else 503, headers={"Cache-Control": "no-store"})


async def _metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[STATUS_KEY].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST, "Cache-Control": "no-store"})


def health_app(status: KioskStatus) -> web.Application:
    app = web.Application()
    app[STATUS_KEY] = status
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/metrics", _metrics)
    return app


@dataclass(frozen=True)
class HealthServer:
    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


@asynccontextmanager
async def serve_health(status: KioskStatus, port: int, host: str = "127.0.0.1") -> AsyncIterator[HealthServer]:
    """Serve :func:`health_app` on ``host:port`` (port 0: any free port) until the block exits."""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        log.warning("health endpoint on %s: /healthz and /metrics have no authentication", host)
    runner = web.AppRunner(health_app(status), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port} for --health-port: {exc.strerror}") from exc
        bound = int(runner.addresses[0][1]) if runner.addresses else port  # port 0: the one the OS chose
        yield HealthServer(host, bound)
    finally:
        await runner.cleanup()
