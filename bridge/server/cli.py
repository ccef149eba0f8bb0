"""``bridge serve``: run the token server, against the real API or the built-in emulator.

With no ``OPENAI_API_KEY`` (or with ``--offline``) the emulator runs in this process on a free loopback
port and keys are minted there; one banner line says so. Then the URL to open is printed.
``bridge serve tokens add|list|revoke`` manages the fleet's per-kiosk tokens (``bridge.server.kiosks``).

SIGTERM/SIGINT: the listening socket closes first (stop accepting), then with ``--redis-url`` the live
calls are handed over to other replicas (``CallManager.hand_over``), then the process exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import secrets
import signal
import sys
from collections.abc import AsyncIterator
from urllib.parse import urlparse

from aiohttp import web

from bridge.errors import ConfigError
from bridge.server import logs
from bridge.server.app import make_app
from bridge.server.settings import ServerSettings, from_args, log_json_from_env, upstream

log = logging.getLogger(__name__)

LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


@contextlib.asynccontextmanager
async def run_site(app: web.Application, host: str, port: int, shutdown_timeout: float = 60.0) -> AsyncIterator[int]:
    """Serve ``app`` on host:port (0 = a free port); yields the bound port. On exit the socket closes first,
    then in-flight requests get ``shutdown_timeout`` seconds."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
        yield int(runner.addresses[0][1])
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def emulator_upstream() -> AsyncIterator[str]:
    """The built-in emulator on a free loopback port; yields its API base URL."""
    from bridge.emulator.app import make_app as make_emulator_app
    from bridge.emulator.config import EmulatorConfig

    async with run_site(make_emulator_app(EmulatorConfig()), "127.0.0.1", 0) as port:
        yield f"http://127.0.0.1:{port}/v1"


async def serve(args: argparse.Namespace) -> int:
    if getattr(args, "serve_command", None) == "tokens":
        from bridge.server.kiosks import tokens_main

        logs.configure(log_json_from_env())
        return await tokens_main(args)
    creds = upstream(args)
    offline = bool(args.offline or not creds.api_key)
    async with contextlib.AsyncExitStack() as stack:
        if offline:
            api_base = await stack.enter_async_context(emulator_upstream())
            api_key = "sk-emulator-" + secrets.token_hex(16)  # the emulator accepts any sk- key
            reason = "--offline" if args.offline else "no OPENAI_API_KEY"
            print(f"bridge serve: {reason}: minting keys at the built-in emulator, {api_base}", flush=True)
        else:
            assert creds.api_key is not None
            api_base, api_key = creds.api_base, creds.api_key
        settings = from_args(args, api_key, api_base, offline)
        logs.configure(settings.log_json, settings.api_key, settings.access_token, settings.redis_url)
        if args.host not in LOOPBACK_HOSTS and not settings.tokens_required:
            print(
                "bridge serve: warning: listening beyond loopback with no --access-token; anyone who can "
                "reach this port can spend your API credit",
                file=sys.stderr,
                flush=True,
            )
        if settings.redis_url is not None:
            print(f"bridge serve: fleet replica {settings.replica_id}, shared state in {_redis_where(settings)}",
                  flush=True)  # fmt: skip
        grace = settings.upstream_timeout + 5.0
        port = await stack.enter_async_context(run_site(make_app(settings), args.host, args.port, grace))
        shown = f"[{args.host}]" if ":" in args.host else args.host
        if settings.agents is not None:
            names = ", ".join(settings.agents.agents)
            print(
                f"bridge serve: agents on the server ({names}; start {settings.agents.start}); "
                f"browser calls via /api/call, transcripts in {settings.transcripts_dir}/",
                flush=True,
            )
        print(f"bridge serve: open http://{shown}:{port}/ in a browser (Ctrl-C to stop)", flush=True)
        await _wait_for_signal()
        log.info("stopping: no new connections%s", "; handing calls over" if settings.fleet else "")
    return 0


def _redis_where(settings: ServerSettings) -> str:
    """``redis://host:port/db (prefix p)`` without user or password."""
    assert settings.redis_url is not None
    u = urlparse(settings.redis_url)
    where = f"{u.scheme}://{u.hostname or ''}{f':{u.port}' if u.port else ''}{u.path}"
    return f"{where} (prefix {settings.redis_prefix})"


async def _wait_for_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def main(args: argparse.Namespace) -> int:
    return asyncio.run(serve(args))
