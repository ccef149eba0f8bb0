"""``bridge serve``: run the token server, against the real API or the built-in emulator.

With no ``OPENAI_API_KEY`` (or with ``--offline``) the emulator runs in this process on a free loopback
port and keys are minted there; one banner line says so. Then the URL to open is printed.
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
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from bridge.config import DEFAULT_MODEL, DEFAULT_VOICE, credentials, env, read_text_arg
from bridge.errors import ConfigError
from bridge.server.app import make_app
from bridge.server.settings import DEFAULT_TRANSCRIPTS_DIR, ServerSettings, find_web_root, normalize_origin

if TYPE_CHECKING:
    from bridge.agents.config import AgentSet

log = logging.getLogger(__name__)

LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


def build_settings(args: argparse.Namespace, api_key: str, api_base: str, offline: bool) -> ServerSettings:
    """Flags first, then the environment (``BRIDGE_*``), then defaults."""
    origins = []
    for origin in args.allow_origin or []:
        normalized = normalize_origin(origin)
        if normalized is None:
            raise ConfigError(f"--allow-origin must look like https://host[:port], got {origin!r}")
        origins.append(normalized)
    language = getattr(args, "language", None) or env("BRIDGE_TRANSCRIBE_LANGUAGE")
    agents = _load_agents(getattr(args, "agents", None) or env("BRIDGE_AGENTS"))
    return ServerSettings(
        api_key=api_key,
        api_base=api_base,
        model=args.model or env("BRIDGE_MODEL", DEFAULT_MODEL) or DEFAULT_MODEL,
        voice=args.voice or env("BRIDGE_VOICE", DEFAULT_VOICE) or DEFAULT_VOICE,
        instructions=read_text_arg(args.instructions or env("BRIDGE_INSTRUCTIONS")),
        key_ttl=args.key_ttl,
        transcription_language=language,
        greeting=getattr(args, "greeting", None) or env("BRIDGE_GREETING"),
        access_token=args.access_token or env("BRIDGE_ACCESS_TOKEN"),
        allowed_origins=tuple(origins),
        trust_forwarded=env("BRIDGE_TRUST_FORWARDED", "0") in ("1", "true", "yes"),
        offline=offline,
        relay_calls=_relay_calls(offline),
        agents=agents,
        transcripts_dir=Path(
            getattr(args, "transcripts_dir", None) or env("BRIDGE_TRANSCRIPTS_DIR") or DEFAULT_TRANSCRIPTS_DIR
        ),
        max_calls=_int_setting(getattr(args, "max_calls", None), "BRIDGE_MAX_CALLS", 8),
        web_root=find_web_root(getattr(args, "web_root", None)),
    )


def _load_agents(path: str | None) -> AgentSet | None:
    """The agents file, validated at start-up: a bad file is one ConfigError (exit 1) listing every problem."""
    if not path:
        return None
    from bridge.agents import load_agents

    return load_agents(path)


def _int_setting(flag: int | None, name: str, default: int) -> int:
    if flag is not None:
        return int(flag)
    raw = env(name)
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from exc


def _relay_calls(offline: bool) -> bool:
    """``BRIDGE_CALLS=relay|direct``; by default the in-process emulator is reached through the relay."""
    mode = (env("BRIDGE_CALLS") or ("relay" if offline else "direct")).lower()
    if mode not in ("relay", "direct"):
        raise ConfigError(f"BRIDGE_CALLS must be relay or direct, got {mode!r}")
    return mode == "relay"


@contextlib.asynccontextmanager
async def run_site(app: web.Application, host: str, port: int) -> AsyncIterator[int]:
    """Serve ``app`` on host:port (0 = a free port); yields the bound port."""
    runner = web.AppRunner(app, access_log=None)
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
    creds = credentials(api_base=args.api_base)
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
        settings = build_settings(args, api_key, api_base, offline)
        if args.host not in LOOPBACK_HOSTS and settings.access_token is None:
            print(
                "bridge serve: warning: listening beyond loopback with no --access-token; anyone who can "
                "reach this port can spend your API credit",
                file=sys.stderr,
                flush=True,
            )
        port = await stack.enter_async_context(run_site(make_app(settings), args.host, args.port))
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
    return 0


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
