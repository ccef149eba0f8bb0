"""``bridge run --kiosk``: always on for weeks, a call only while someone talks.

States (``bridge.kiosk.health.KioskState``, one log line per change, ``/healthz`` shows the current one):

- **idle**: the station's microphone is open and the local voice detector listens (a tap on the microphone:
  :class:`bridge.kiosk.listener.Listener`); no call exists and nothing is sent anywhere;
- **connecting**: someone started talking (a VAD onset, or the wake phrase): a call opens with a fresh key
  while everything said since just before the onset is held (:class:`bridge.kiosk.preroll.Backlog`);
- **in_call**: the call's first connection takes the held audio first (:class:`bridge.kiosk.drain.DrainingUplink`),
  then live audio; it is a normal :class:`bridge.call.call.Call`, so drops are reconnected;
- **reconnecting**: that call's connection is being replaced;
- back to **idle** when nobody has spoken for ``--hangup-after`` seconds (no reply pending or playing),
  at ``--max-call``, or when the hourly budget runs out; the next visitor gets a fresh session;
- **budget_spent**: listening, but ``--max-call-minutes-per-hour`` allows no call now;
- **no_device**: the microphone or speaker went away (unplugged, sound server restarted): any call is hung
  up, PortAudio is re-initialised and the devices reopened by name with backoff, and the kiosk resumes.

One transcript file per call in ``--transcript-dir``, old ones deleted after ``--keep-days``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp

from bridge.agents import AgentController, AgentSet
from bridge.aio import task_group
from bridge.call.call import Call
from bridge.call.connection import Connection
from bridge.call.connector import Connector
from bridge.call.record import CallRecord
from bridge.call.replay import ReplayBudget
from bridge.call.station import Station
from bridge.call.supervisor import ReconnectPolicy
from bridge.config import Credentials, KioskConfig, RunConfig
from bridge.errors import AudioError, BridgeError
from bridge.kiosk.budget import BudgetSettings, CallBudget
from bridge.kiosk.drain import DrainingUplink
from bridge.kiosk.health import CallEndReason, KioskState, KioskStatus, serve_health
from bridge.kiosk.listener import Listener
from bridge.kiosk.preroll import DrainSettings, PreRoll
from bridge.kiosk.retention import call_transcript_path, prune
from bridge.kiosk.systemd import Notifier, WatchdogFeeder, watchdog_interval
from bridge.kiosk.vad import VadEvent, VoiceActivity, load_engine
from bridge.kiosk.wakeword import load_wake_word
from bridge.media import soundserver
from bridge.media.aec_engine import describe_engine
from bridge.media.portaudio import rescan
from bridge.transcript import TranscriptWriter

log = logging.getLogger(__name__)

WATCH_S = 0.25
REOPEN_FIRST_S = 0.5
REOPEN_MAX_S = 8.0
GOODBYE_WAIT_S = 8.0


class LogConsole:
    """A kiosk has no terminal: turns go to the per-call transcript, and to the log at debug level."""

    def line(self, who: str, text: str) -> None:
        log.debug("%s: %s", who, text)

    def error(self, text: str) -> None:
        log.warning("server error: %s", text)


class Kiosk:
    """The kiosk service (see module docstring)."""

    def __init__(
        self,
        run: RunConfig,
        cfg: KioskConfig,
        credentials: Credentials,
        http: aiohttp.ClientSession,
        *,
        agents: AgentSet | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        self.run_cfg = run
        self.cfg = cfg
        self.credentials = credentials
        self.http = http
        self.agents = agents
        self.notifier = notifier or Notifier()
        self.budget = CallBudget(BudgetSettings(cfg.max_call_s, cfg.max_call_minutes_per_hour))
        self.status = KioskStatus(budget_remaining=self.budget.remaining_s, on_change=self._changed)
        self.preroll = PreRoll()
        self.drain = DrainSettings()
        self.vad = VoiceActivity(load_engine(cfg.vad_engine))
        self.wake_word = load_wake_word(cfg.wake_word) if cfg.wake_word else None
        self.policy = ReconnectPolicy(
            reconnect_for=run.reconnect_for,
            budget=ReplayBudget(turns=run.replay_turns, chars=run.replay_chars, shape=run.replay),
        )
        self.visits = 0
        self._ready = False

    def _changed(self, old: KioskState, new: KioskState, why: str | None) -> None:
        self.notifier.status(new.value + (f": {why}" if why else ""))

    # ---- the service ------------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop``: serve visitors, reopening the devices whenever they go away."""
        async with self._health(), task_group() as tg:
            interval = watchdog_interval()
            feeder = (
                tg.create_task(WatchdogFeeder(self.notifier, interval, self.status.unhealthy).run())
                if interval
                else None
            )
            try:
                await self._stations(stop)
            finally:
                self.notifier.stopping("shutting down")
                if feeder is not None:
                    feeder.cancel()

    @contextlib.asynccontextmanager
    async def _health(self) -> AsyncIterator[None]:
        if self.cfg.health_port is None:
            yield
            return
        async with serve_health(self.status, self.cfg.health_port, self.cfg.health_host) as server:
            log.info("health and metrics at %s/healthz and /metrics", server.url)
            yield

    async def _stations(self, stop: asyncio.Event) -> None:
        delay = REOPEN_FIRST_S
        placed: soundserver.Placement | None = None  # the sound-server devices of the first good station
        if soundserver.available():
            with contextlib.suppress(AudioError):
                placed = await soundserver.defaults()
                soundserver.pin(placed)  # open on these by name, now and after every reopen
                log.info("sound server: microphone %r, speaker %r", placed.source, placed.sink)
        while not stop.is_set():
            station = Station.for_devices(
                self.run_cfg.input,
                self.run_cfg.output,
                paced_replies=self.run_cfg.transport == "webrtc",
                watch_devices=True,
                expected=placed,
                speaker_on_demand=True,  # idle with the microphone alone: the speaker opens with a call
                aec_mode=self.run_cfg.aec,
            )
            try:
                async with station.running():
                    delay = REOPEN_FIRST_S
                    await self._serve(station, stop)
                return
            except AudioError as exc:
                if stop.is_set():
                    return
                placed = placed or station.placement
                self._devices(station, present=False)
                self.status.on_error(str(exc))
                self.status.set_state(KioskState.NO_DEVICE, str(exc))
                await self._wait_for_devices(placed, delay, stop)
                delay = min(REOPEN_MAX_S, delay * 2)

    async def _wait_for_devices(self, placed: soundserver.Placement | None, delay: float, stop: asyncio.Event) -> None:
        """Back off; with a sound server, until the devices we had are there again (then open those)."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await stop.wait()
            if placed is None:
                break
            try:
                if await soundserver.present(placed):
                    soundserver.pin(placed)  # the same devices, not whatever the server falls back to
                    break
            except AudioError as exc:  # the sound server itself is not back yet
                log.info("waiting for the sound server: %s", exc)
            delay = min(REOPEN_MAX_S, delay * 2)
        with contextlib.suppress(AudioError):
            rescan()  # PortAudio lists devices once: look again (every stream is closed by now)

    def _devices(self, station: Station, *, present: bool) -> None:
        for role, dev in (("input", station.source), ("output", station.sink)):
            name = str(dev.describe().get("name") or dev.describe().get("path") or dev.describe().get("kind"))
            self.status.set_device(role, name, present)  # type: ignore[arg-type]

    async def _serve(self, station: Station, stop: asyncio.Event) -> None:
        """Idle, wake, call, idle again, on one station (until ``stop`` or a device error)."""
        listener = Listener(self.vad, self.preroll, self.status, asyncio.get_running_loop(), wake_word=self.wake_word)
        listener.reset()
        await station.calibrate()  # first start on these devices: find the echo path (before listening)
        station.mic.add_tap(listener)
        await station.start_mic()
        await station.watching.wait()  # the devices are the ones they should be (a sound server says so)
        self._devices(station, present=True)
        self._echo(station)
        self._idle()
        if not self._ready:
            self._ready = True
            self.notifier.ready("idle")
        while True:
            event = await _next(listener.events, stop)
            if event is None:
                return
            if event.kind != "onset":
                continue
            refusal = self.budget.refusal()
            if refusal is not None:
                self.status.on_wake_refused()
                self.status.set_state(KioskState.BUDGET_SPENT, refusal)
                continue
            await self._visit(station, listener, event, stop)
            while not listener.events.empty():  # what was heard during the call is no new visitor
                listener.events.get_nowait()
            self._idle()

    def _echo(self, station: Station) -> None:
        """Health and metrics: echo cancellation off, or on with its last measured ERLE."""
        if station.echo is None:
            self.status.set_aec("absent" if describe_engine() is None else "off")
            return
        metrics = station.echo.metrics()
        self.status.set_aec("on", metrics.erle_db)
        log.info("echo cancellation: %s", metrics.line())

    def _idle(self) -> None:
        refusal = self.budget.refusal()
        if refusal is None:
            self.status.set_state(KioskState.IDLE)
        else:
            self.status.set_state(KioskState.BUDGET_SPENT, refusal)

    # ---- one visitor ---------------------------------------------------------------------------------

    async def _visit(self, station: Station, listener: Listener, onset: VadEvent, stop: asyncio.Event) -> None:
        """One call, from the onset to the hang-up."""
        self.visits += 1
        started = time.time()
        self.budget.call_started()
        self.status.on_wake("wake_word" if self.wake_word else "vad")
        self.status.on_call_start()
        self.status.set_state(KioskState.CONNECTING)
        backlog = self.preroll.start_backlog(onset.speech_from - self.drain.lead_s, self.drain)
        await station.speaker_on()
        path = call_transcript_path(self.cfg.transcript_dir, started)
        transcript = TranscriptWriter(path)
        transcript.open()
        record = CallRecord(transcript, LogConsole())
        tools = AgentController(self.agents) if self.agents is not None else None
        drained = False

        def attach(conn: Connection) -> None:
            nonlocal drained
            if not drained and self.preroll.backlog is backlog:
                station.mic.attach(DrainingUplink(conn.uplink, self.preroll, backlog))
            else:
                if self.preroll.backlog is backlog:
                    self.preroll.stop_backlog()
                conn.attach_mic()
            drained = True

        connector = Connector.for_run(self.http, self.credentials, station, self.run_cfg)
        session = self.run_cfg.session(station.cancels_echo)
        if self.agents is not None:
            session = self.agents.session_config(session)
        call = Call(connector, record, session, tools=tools, policy=self.policy, attach=attach)
        end = asyncio.Event()
        reason: list[CallEndReason] = ["remote"]
        try:
            async with task_group() as tg:
                watcher = tg.create_task(self._watch(call, listener, end, reason, stop), name="call-watch")
                try:
                    await call.run(end)
                except AudioError:
                    reason[0] = "device_lost"
                    raise
                except asyncio.CancelledError:  # the station went down under the call (or we are stopping)
                    reason[0] = "shutdown" if stop.is_set() else "device_lost"
                    raise
                except BridgeError as exc:  # the call could not start or could not go on: back to idle
                    reason[0] = "error"
                    self.status.on_error(str(exc))
                    log.warning("call ended: %s", exc)
                finally:
                    watcher.cancel()
        finally:
            if self.preroll.backlog is backlog:
                self.preroll.stop_backlog()
            with contextlib.suppress(AudioError):
                await station.speaker_off()
            self._echo(station)
            transcript.write("stats", **station.stats(), **call.stats())
            transcript.close()
            seconds = self.budget.call_ended()
            user_turns = sum(1 for turn in record.history if turn.role == "user")
            for ms in record.metrics.response_ms:
                self.status.observe_response_ms(ms)
            for ms in record.metrics.bargein_ms:
                self.status.observe_bargein_ms(ms)
            for _ in range(call.supervisor.reconnects):
                self.status.on_reconnect()
            self.status.on_call_end(reason[0], user_turns, seconds)
            log.info(
                "call %d ended (%s) after %.1f s, %d user turns: %s", self.visits, reason[0], seconds, user_turns, path
            )
            self._prune(path)

    async def _watch(
        self, call: Call, listener: Listener, end: asyncio.Event, reason: list[CallEndReason], stop: asyncio.Event
    ) -> None:
        """Keep the state current; end the call when the visitor left, at the caps, or on shutdown."""
        last_active = time.monotonic()
        connected_once = False
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(WATCH_S):
                    await stop.wait()
            now = time.monotonic()
            if stop.is_set():
                reason[0] = "shutdown"
                end.set()
                return
            conn = call.connection
            if conn is None:
                state = KioskState.RECONNECTING if connected_once else KioskState.CONNECTING
            else:
                connected_once = True
                state = KioskState.IN_CALL
            if self.status.state is not state:
                self.status.set_state(state)
            deadline = self.budget.deadline()
            if deadline is not None and now >= deadline:
                reason[0] = (
                    "max_call" if self.budget.used_s() < (self.budget.settings.limit_s or float("inf")) else "budget"
                )
                end.set()
                return
            busy = conn is None or not conn.runtime.at_turn_boundary() or listener.quiet_for(now) < 1.0
            if busy:
                last_active = now
            elif now - last_active >= self.cfg.hangup_after_s:
                if self.cfg.goodbye and conn is not None:
                    await self._goodbye(conn)
                reason[0] = "idle"
                end.set()
                return

    async def _goodbye(self, conn: Connection) -> None:
        """A short spoken goodbye before an idle hang-up, bounded."""
        await conn.runtime.send({"type": "response.create", "response": {"instructions": self.cfg.goodbye}})
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(GOODBYE_WAIT_S):
                await asyncio.sleep(0.5)  # the goodbye reply has begun
                while not conn.runtime.at_turn_boundary():  # noqa: ASYNC110 - the state of several parts, polled
                    await asyncio.sleep(WATCH_S)

    def _prune(self, keep: Path) -> None:
        if self.cfg.keep_days is None:
            return
        try:
            report = prune(self.cfg.transcript_dir, self.cfg.keep_days, keep=frozenset({keep}))
        except OSError as exc:
            log.warning("could not prune old transcripts: %s", exc)
            return
        if report.deleted:
            log.info("deleted %d transcripts older than %g days", len(report.deleted), self.cfg.keep_days)


async def _next(events: asyncio.Queue[VadEvent], stop: asyncio.Event) -> VadEvent | None:
    """The next event, or None once ``stop`` is set."""
    async with task_group() as tg:
        got = tg.create_task(events.get())
        stopped = tg.create_task(stop.wait())
        await asyncio.wait({got, stopped}, return_when=asyncio.FIRST_COMPLETED)
        got.cancel()
        stopped.cancel()
    if got.cancelled():
        return None
    return got.result()
