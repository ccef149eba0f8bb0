"""``async with running_emulator(**overrides) as emu`` for the project's tests: a real server on 127.0.0.1.

``emu.base_url`` is ``http://127.0.0.1:PORT/v1`` (use it as ``OPENAI_BASE_URL`` / ``base_url=``),
``emu.api_key`` a key the emulator accepts, ``emu.log_events()`` every event logged so far.

Faults (docs/emulator.md "Faults"): ``await emu.inject("drop", session=None, after_s=0, ...)`` (the same
fields as ``POST /_emulator/faults``), ``emu.open_sessions()`` (``GET /_emulator/sessions``' list),
``await emu.restart()``; ``emu.admin_url`` for a test that drives another process's emulator the same way.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from bridge.emulator import admin
from bridge.emulator.app import make_app
from bridge.emulator.config import EmulatorConfig
from bridge.emulator.faults import parse_fault
from bridge.emulator.state import STATE, EmulatorState

TEST_API_KEY = "sk-test-emulator-0000000000000000"


@dataclass
class RunningEmulator:
    base_url: str
    ws_url: str
    port: int
    api_key: str
    config: EmulatorConfig
    app: web.Application

    @property
    def state(self) -> EmulatorState:
        return self.app[STATE]

    def log_events(self, direction: str | None = None) -> list[dict[str, Any]]:
        """Log records (``{"t","dir","transport","session","event"}``), optionally only "in" or "out"."""
        records = self.app[STATE].log.records()
        return [r for r in records if direction is None or r["dir"] == direction]

    def server_events(self) -> list[dict[str, Any]]:
        """Every server event sent so far (audio payloads replaced by byte counts)."""
        return [r["event"] for r in self.log_events("out") if "type" in r["event"] and r["transport"] != "rest"]

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{admin.PREFIX}"

    async def inject(self, kind: str, session: str | None = None, **fields: Any) -> list[str]:
        """Apply a fault now (``after_s=`` to arm it); returns the session ids it concerns.

        ``session`` is a session id or call id (None: every open session). Raises ``FaultError`` for a fault
        that makes no sense and ``LookupError`` when ``session`` names no open session.
        """
        fault = parse_fault({"kind": kind, "session": session, **fields})
        return await admin.apply_fault(self.state, fault)

    def open_sessions(self) -> list[dict[str, Any]]:
        """The open sessions with their conversation context (the admin API's ``sessions`` list)."""
        return list(admin.sessions_json(self.state)["sessions"])

    async def restart(self) -> list[str]:
        """Every session, key and call forgotten, every connection dropped; returns the session ids."""
        return await admin.restart(self.state)


@contextlib.asynccontextmanager
async def running_emulator(**overrides: Any) -> AsyncIterator[RunningEmulator]:
    """Start the emulator on a free loopback port; ``overrides`` are :class:`EmulatorConfig` fields."""
    config = dataclasses.replace(EmulatorConfig(), **overrides)
    app = make_app(config)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        yield RunningEmulator(
            base_url=f"http://127.0.0.1:{port}/v1",
            ws_url=f"ws://127.0.0.1:{port}/v1/realtime",
            port=port,
            api_key=TEST_API_KEY if config.api_keys is None else sorted(config.api_keys)[0],
            config=config,
            app=app,
        )
    finally:
        await runner.cleanup()
