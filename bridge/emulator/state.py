"""Per-app state (one per ``make_app``), reachable through a typed ``web.AppKey``; no module globals."""

from __future__ import annotations

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

    def new_engine(self, session: dict[str, Any], transport: Transport) -> Engine:
        engine = Engine(self.config, session, self.behaviour, transport=transport, log_sink=self.log)
        self.engines.add(engine)
        return engine


STATE: web.AppKey[EmulatorState] = web.AppKey("emulator_state", EmulatorState)
