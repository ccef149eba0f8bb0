"""A call: one conversation, over one connection after another.

A :class:`Call` owns what outlives a connection: the :class:`bridge.call.record.CallRecord` (transcript,
conversation order, merged metrics), the agent controller (which agent is active), and the call's own
tasks (push-to-talk). It runs on a station, which owns the audio devices and outlives the call. The
connections themselves are opened by a :class:`bridge.call.connector.Connector` and kept going by the
call's :class:`bridge.call.supervisor.Supervisor`.

Lifetimes, one TaskGroup each: the station (process) > the call > the connection (:meth:`Runtime.run`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from bridge.agents.controller import AgentController
from bridge.aio import task_group
from bridge.call.connection import Connection
from bridge.call.connector import Connector
from bridge.call.record import CallRecord
from bridge.call.supervisor import ReconnectPolicy, Supervisor
from bridge.link.base import CloseInfo, CloseReason

log = logging.getLogger(__name__)

Feature = Callable[["Call"], Coroutine[Any, Any, None]]
"""A task that runs for the whole call (e.g. push-to-talk reading keys), cancelled at its end."""
Attach = Callable[[Connection], None]
"""How a connection takes the microphone when it becomes current (default: ``conn.attach_mic()``; a kiosk
first drains the audio it held while the call connected)."""


class Call:
    """One conversation (see module docstring)."""

    def __init__(
        self,
        connector: Connector,
        record: CallRecord,
        session_config: dict[str, Any],
        *,
        tools: AgentController | None = None,
        features: Sequence[Feature] = (),
        policy: ReconnectPolicy | None = None,
        attach: Attach | None = None,
    ) -> None:
        self.connector = connector
        self.record = record
        self.tools = tools
        self.base_config = session_config
        self.connection: Connection | None = None
        """The current connection (None between connections)."""
        self.connected = asyncio.Event()
        self._features = features
        self._attach = attach
        self.supervisor = Supervisor(self, policy)

    def session_config(self) -> dict[str, Any]:
        """The configuration a new session of this call starts with (with agents: the active agent's)."""
        if self.tools is not None:
            return self.tools.session_config(self.base_config)
        return self.base_config

    async def open_connection(self) -> Connection:
        """Connect a new session of this call (not yet the current one: see :meth:`activate`)."""
        return await self.connector.open(self.session_config(), self.record, self.tools)

    def activate(self, conn: Connection) -> None:
        """``conn`` becomes the current connection: its reply audio plays, the microphone moves to it."""
        conn.go_live(self.connector.station.playout)
        if self._attach is not None:
            self._attach(conn)
        else:
            conn.attach_mic()
        self.connection = conn
        self.connected.set()

    def fade_out(self, fade_ms: float) -> None:
        """The connection is gone: what it was playing stops, with a short fade."""
        self.connector.station.playout.flush(fade_ms)

    def unrouted_frames(self) -> int:
        """Microphone frames no connection took so far (counted, never queued for later)."""
        return self.connector.station.mic.unrouted

    def station_quiet_for(self) -> float:
        """Seconds since the room was last loud at the microphone."""
        return self.connector.station.activity.quiet_for(time.monotonic())

    async def close_connection(self, conn: Connection) -> None:
        if self.connection is conn:
            self.connection = None
            self.connected.clear()
        self.supervisor.forget(conn)
        await conn.aclose()

    async def run(self, stop: asyncio.Event, duration: float | None = None) -> CloseInfo:
        """Until ``stop`` is set, ``duration`` has passed since the call first connected, or the supervisor
        gives up; returns why the last connection ended (``hangup`` when asked to stop)."""
        async with task_group() as tg:
            supervised = tg.create_task(self.supervisor.run(), name="supervisor")
            asked = tg.create_task(self._wait(stop, duration), name="stop")
            features = [tg.create_task(f(self), name="feature") for f in self._features]
            await asyncio.wait({supervised, asked}, return_when=asyncio.FIRST_COMPLETED)
            for task in (supervised, asked, *features):
                task.cancel()
        if asked.done() and not asked.cancelled():
            return CloseInfo(CloseReason.HANGUP)
        return supervised.result()

    def stats(self) -> dict[str, Any]:
        """``stats``-line fields: reconnects, and the latest connection's counters."""
        conn = self.supervisor.last
        out: dict[str, Any] = {
            "reconnects": self.supervisor.reconnects,
            "renewals": self.supervisor.renewals,
            "internal_errors": self.record.metrics.internal_errors,
            "malformed_events": self.record.metrics.malformed,
        }
        if conn is not None:
            out.update(conn.link.stats())
            out["spoken_again"] = conn.runtime.spoken.recovered
        return out

    async def _wait(self, stop: asyncio.Event, duration: float | None) -> None:
        async with task_group() as tg:
            stopped = tg.create_task(stop.wait())
            connected = tg.create_task(self.connected.wait())
            await asyncio.wait({stopped, connected}, return_when=asyncio.FIRST_COMPLETED)
            connected.cancel()
            try:
                async with asyncio.timeout(duration):
                    await stopped
            except TimeoutError:
                stopped.cancel()
