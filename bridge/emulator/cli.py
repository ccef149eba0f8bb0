"""``bridge emulate``: serve the emulator until Ctrl-C, printing one line with the base URL."""

from __future__ import annotations

import argparse
import asyncio
import contextlib

from aiohttp import web

from bridge.emulator.app import make_app
from bridge.emulator.config import EmulatorConfig
from bridge.emulator.faults import CLOSE_CODES, Fault
from bridge.errors import ConfigError


def _session_faults(args: argparse.Namespace) -> tuple[Fault, ...]:
    """The faults armed for every session (``--drop-after-s`` ...), each from the session's start."""
    faults = []
    if args.drop_after_s is not None:
        faults.append(Fault("drop", after_s=args.drop_after_s))
    if args.stall_after_s is not None:
        faults.append(Fault("stall", after_s=args.stall_after_s))
    if args.close_after_s is not None:
        if args.close_code not in CLOSE_CODES:
            raise ConfigError(f"--close-code must be one of {', '.join(map(str, CLOSE_CODES))}")
        faults.append(Fault("close", after_s=args.close_after_s, code=args.close_code))
    if args.error_after_s is not None:
        faults.append(Fault("error", after_s=args.error_after_s, code=args.error_code, error_type=args.error_type))
    for fault in faults:
        if fault.after_s < 0:
            raise ConfigError(f"--{fault.kind}-after-s must be >= 0")
    return tuple(faults)


def config_from_args(args: argparse.Namespace) -> EmulatorConfig:
    keys = None
    if getattr(args, "api_keys", None):
        keys = frozenset(k.strip() for k in args.api_keys.split(",") if k.strip())
        if not keys:
            raise ConfigError("--api-keys is empty")
    if args.speed <= 0:
        raise ConfigError("--speed must be > 0")
    if args.max_session_s <= 0:
        raise ConfigError("--max-session-s must be > 0")
    if args.drop_random_s is not None and args.drop_random_s <= 0:
        raise ConfigError("--drop-random-s must be > 0")
    return EmulatorConfig(
        behaviour=args.behaviour,
        speed=args.speed,
        think_ms=args.think_ms,
        reply_seconds=args.reply_seconds,
        api_keys=keys,
        log_path=args.log,
        session_max_seconds=args.max_session_s,
        session_faults=_session_faults(args),
        refuse_for_s=args.refuse_for_s,
        refuse_status=args.refuse_status,
        random_drop_mean_s=args.drop_random_s,
        fault_seed=args.fault_seed,
        text_only_after_assistant_text=args.text_only_after_assistant_text,
        quote_context=args.quote_context,
        admin=not args.no_admin,
        admin_allow=tuple(args.admin_allow or ()),
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
