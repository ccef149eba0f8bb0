"""Per-app state (one per ``make_app``), reachable through a typed ``web.AppKey``; no module globals."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from bridge.emulator.auth import KeyStore
from bridge.emulator.behaviours import Behaviour
from bridge.emulator.client_events import Transport
from bridge.emulator.config import EmulatorConfig
from bridge.emulator.engine import Engine
from bridge.emulator.faults import Fault, Switches, apply_to_session
from bridge.emulator.log import EventLog

if TYPE_CHECKING:
    from bridge.emulator.webrtc import RtcCall


@dataclass
class EmulatorState:
    config: EmulatorConfig
    behaviour: Behaviour
    keys: KeyStore
    log: EventLog
    engines: set[Engine] = field(default_factory=set)
    calls: dict[str, RtcCall] = field(default_factory=dict)
    sockets: set[web.WebSocketResponse] = field(default_factory=set)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)  # call reapers; cancelled at cleanup
    switches: Switches = field(default_factory=Switches)
    timers: set[asyncio.TimerHandle] = field(default_factory=set)  # scheduled faults; cancelled at cleanup

    def new_engine(self, session: dict[str, Any], transport: Transport) -> Engine:
        """A new session, with the faults armed for every session (CLI flags, ``random_drops``)."""
        engine = Engine(
            self.config, session, self.behaviour, transport=transport, log_sink=self.log, switches=self.switches
        )
        self.engines.add(engine)
        for fault in self.switches.templates:
            self.schedule_fault(engine, fault, fault.after_s)
        after = self.switches.random_drop_after()
        if after is not None:
            self.schedule_fault(engine, Fault("drop"), after)
        return engine

    def open_engines(self, target: str | None = None) -> list[Engine]:
        """Open sessions, all or the one whose session id or call id is ``target``."""
        found = [e for e in self.engines if not e.closed]
        if target is not None:
            found = [e for e in found if target in (e.id, e.call_id)]
        return sorted(found, key=lambda e: e.created_at)

    def schedule_fault(self, engine: Engine, fault: Fault, delay: float) -> None:
        """Apply a session fault to ``engine`` after ``delay`` s (at once if 0), unless it has ended."""
        if delay <= 0:
            apply_to_session(engine, fault)
            return

        def fire() -> None:
            self.timers.discard(handle)
            if not engine.closed:
                apply_to_session(engine, fault)

        handle = asyncio.get_running_loop().call_later(delay, fire)
        self.timers.add(handle)

    def forget_everything(self) -> tuple[list[Engine], list[RtcCall]]:
        """Restart with no memory: sessions, calls and keys forgotten; returns what the caller must tear down."""
        engines, calls = list(self.engines), list(self.calls.values())
        self.engines.clear()
        self.calls.clear()
        self.keys.forget_all()
        for handle in self.timers:
            handle.cancel()
        self.timers.clear()
        return engines, calls

    def watch_call(self, call: RtcCall) -> None:
        """Forget a call (and its engine) once it ends on its own: peer gone, session expired, hangup."""

        async def reap() -> None:
            await call.wait_closed()
            if self.calls.get(call.id) is call:
                del self.calls[call.id]
            self.engines.discard(call.engine)

        task = asyncio.get_running_loop().create_task(reap(), name=f"reap {call.id}")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


STATE: web.AppKey[EmulatorState] = web.AppKey("emulator_state", EmulatorState)
