"""The built-in emulator for offline runs: ``bridge run`` / ``bridge serve`` with no API key.

It runs in-process on a free 127.0.0.1 port, with ICE candidates kept on loopback, and a key that is
valid only for this process.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web

from bridge.emulator.app import make_app
from bridge.emulator.config import EmulatorConfig


@asynccontextmanager
async def start_emulator(behaviour: str = "speech", host: str = "127.0.0.1") -> AsyncIterator[tuple[str, str]]:
    """Serve the emulator; yields ``(base_url, api_key)``."""
    api_key = "sk-offline-" + secrets.token_hex(12)
    config = EmulatorConfig(behaviour=behaviour, api_keys=frozenset({api_key}), loopback_ice=True)
    runner = web.AppRunner(make_app(config), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://{host}:{port}/v1", api_key
    finally:
        await runner.cleanup()
