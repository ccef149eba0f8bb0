"""``bridge emulate``: serve the emulator until Ctrl-C, printing one line with the base URL."""

from __future__ import annotations

import argparse
import asyncio
import contextlib

from aiohttp import web

from bridge.emulator.app import make_app
from bridge.emulator.config import EmulatorConfig
from bridge.errors import ConfigError


def config_from_args(args: argparse.Namespace) -> EmulatorConfig:
    keys = None
    if getattr(args, "api_keys", None):
        keys = frozenset(k.strip() for k in args.api_keys.split(",") if k.strip())
        if not keys:
            raise ConfigError("--api-keys is empty")
    if args.speed <= 0:
        raise ConfigError("--speed must be > 0")
    return EmulatorConfig(
        behaviour=args.behaviour,
        speed=args.speed,
        think_ms=args.think_ms,
        reply_seconds=args.reply_seconds,
        api_keys=keys,
        log_path=args.log,
        # ICE host candidates on 127.0.0.1 only when serving on loopback; on another address (a network
        # namespace, a LAN) the answer must offer that machine's own addresses
        loopback_ice=args.host in ("127.0.0.1", "localhost", "::1"),
    )


async def serve(config: EmulatorConfig, host: str, port: int) -> None:
    app = make_app(config)
    runner = web.AppRunner(app, shutdown_timeout=2.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
        bound = runner.addresses[0][1] if runner.addresses else port
        print(f"bridge emulate: listening on http://{host}:{bound}/v1 (behaviour {config.behaviour})", flush=True)
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(config, args.host, args.port))
    return 0
