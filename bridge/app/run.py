"""``bridge run``: a station, a call on it, and a clean teardown.

Order of operations (each step fails with one clear line): configuration -> (offline: start the built-in
emulator) -> the microphone checked and the speaker opened (a wrong device is reported before anything
touches the network) -> transcript -> the call connects (timed) and runs until the connection closes,
Ctrl-C / SIGTERM or ``--duration`` -> hang up, close the peer, finish the transcript. Ctrl-C, SIGTERM and
``--duration`` exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import Coroutine
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import aiohttp

from bridge.agents import AgentController, load_agents
from bridge.call.call import Call, Feature
from bridge.call.connector import Connector
from bridge.call.record import CallRecord, PrintConsole
from bridge.call.replay import ReplayBudget
from bridge.call.station import Station
from bridge.call.supervisor import ReconnectPolicy
from bridge.config import Credentials, KioskConfig, RunConfig
from bridge.errors import AudioError, AuthError, ConnectError, ProtocolError
from bridge.link.base import CloseInfo, CloseReason
from bridge.media import resolve_device
from bridge.rtc.loopback import loopback_candidates
from bridge.transcript import TranscriptWriter, default_path

log = logging.getLogger(__name__)


def check_source(dev: str | None) -> None:
    """Fail fast on a microphone that cannot work; it is only started once the call is up."""
    spec = (dev or "").strip()
    if spec.casefold() == "null":
        return
    if spec.casefold().endswith(".wav"):
        if not Path(spec).is_file():
            raise AudioError(f"no such input file: {spec}")
        return
    resolve_device(spec or None, "input")


def is_loopback(url: str) -> bool:
    return urlparse(url).hostname in ("127.0.0.1", "localhost", "::1")


async def _offline_credentials(stack: AsyncExitStack) -> Credentials:
    from bridge.app.offline import start_emulator

    base_url, api_key = await stack.enter_async_context(start_emulator())
    print(f"bridge: no OPENAI_API_KEY: using the built-in emulator at {base_url} (offline)", flush=True)
    return Credentials(api_key=api_key, api_base=base_url)


def _features(cfg: RunConfig) -> list[Feature]:
    if not cfg.ptt:
        return []
    from bridge.app.ptt import PushToTalk

    def ptt(call: Call) -> Coroutine[Any, Any, None]:
        return PushToTalk(call).run()

    return [ptt]


async def amain(cfg: RunConfig) -> int:
    creds = cfg.credentials
    controller = AgentController(load_agents(cfg.agents)) if cfg.agents else None
    transcript = TranscriptWriter(cfg.transcript or default_path())
    stop = asyncio.Event()
    async with AsyncExitStack() as stack:
        _stop_on_signals(stack, stop)
        if cfg.offline or creds.offline:
            creds = await _offline_credentials(stack)
        if is_loopback(creds.api_base):
            # A server on this machine (the emulator) is reachable on loopback only; aioice never offers
            # 127.0.0.1 by itself, so restrict our host candidates to it (bridge.rtc.loopback).
            stack.enter_context(loopback_candidates())
        check_source(cfg.input)
        if cfg.kiosk is not None:
            await _kiosk(cfg, cfg.kiosk, creds, stack, stop)
            return 0
        station = Station.for_devices(cfg.input, cfg.output, paced_replies=cfg.transport == "webrtc", aec_mode=cfg.aec)
        session = cfg.session(station.cancels_echo)
        await stack.enter_async_context(station.running())
        # the first run on these devices: find the echo path before the first reply
        await station.calibrate(lambda text: print(f"bridge: {text}", flush=True))
        http = await stack.enter_async_context(aiohttp.ClientSession())
        transcript.open()
        stack.callback(transcript.close)
        record = CallRecord(transcript, PrintConsole())
        connector = Connector.for_run(http, creds, station, cfg)
        policy = ReconnectPolicy(
            reconnect_for=cfg.reconnect_for,
            budget=ReplayBudget(turns=cfg.replay_turns, chars=cfg.replay_chars, shape=cfg.replay),
        )
        call = Call(connector, record, session, tools=controller, features=_features(cfg), policy=policy)
        try:
            ended = await call.run(stop, cfg.duration)
        finally:
            transcript.write("stats", **station.stats(), **call.stats())
        if ended.reason is not CloseReason.HANGUP:
            raise _error(ended, transcript.path)
    return 0


async def _kiosk(
    cfg: RunConfig, kiosk: KioskConfig, creds: Credentials, stack: AsyncExitStack, stop: asyncio.Event
) -> None:
    """``--kiosk``: the service runs until SIGTERM / Ctrl-C (exit 0 with any call hung up)."""
    from bridge.kiosk.runner import Kiosk

    http = await stack.enter_async_context(aiohttp.ClientSession())
    agents = load_agents(cfg.agents) if cfg.agents else None
    await Kiosk(cfg, kiosk, creds, http, agents=agents).run(stop)


def _error(info: CloseInfo, transcript: Path) -> Exception:
    """The one line for a call that ended without being asked to."""
    line = f"the connection to the model closed: {info.line()}; transcript: {transcript}"
    if info.reason is CloseReason.AUTH:
        return AuthError(line)
    if info.reason in (CloseReason.REJECTED, CloseReason.QUOTA):
        return ProtocolError(line)
    return ConnectError(line)


def _stop_on_signals(stack: AsyncExitStack, stop: asyncio.Event) -> None:
    """Ctrl-C / SIGTERM end the run cleanly (exit 0, call hung up), like --duration."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            stack.callback(loop.remove_signal_handler, sig)


def _run_loop(coro: Coroutine[Any, Any, int]) -> int:
    """uvloop when installed (libuv's loop: measurably less CPU per packet, docs/benchmarks.md), else asyncio."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def main(args: argparse.Namespace) -> int:
    cfg = RunConfig.from_args(args)
    # PortAudio's callback thread needs the GIL promptly; the default 5 ms switch interval can starve it
    # on a 2-core machine and cause underruns.
    sys.setswitchinterval(0.001)
    t0 = time.perf_counter()
    code = _run_loop(amain(cfg))
    log.info("bridge run finished after %.1f s", time.perf_counter() - t0)
    return code
