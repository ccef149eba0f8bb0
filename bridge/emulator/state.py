"""Per-app state (one per ``make_app``), reachable through a typed ``web.AppKey``; no module globals."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from bridge.emulator.auth import KeyStore
from bridge.emulator.behaviours import Behaviour
from bridge.emulator.config import EmulatorConfig
from bridge.emulator.engine import Engine, Transport
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

    def new_engine(self, session: dict[str, Any], transport: Transport) -> Engine:
        engine = Engine(self.config, session, self.behaviour, transport=transport, log_sink=self.log)
        self.engines.add(engine)
        return engine

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
