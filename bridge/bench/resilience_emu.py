"""The resilience bench's emulator process: the emulator plus a command pipe for faults.

``python -m bridge.bench.resilience_emu --host H --config JSON --log PATH`` serves the emulator
(:class:`EmulatorConfig` fields from ``--config``) on ``H`` and a free port, prints one JSON line
``{"base_url": ..., "api_key": ...}`` once listening, then answers one JSON line per command read from
stdin (until EOF):

- ``{"op": "inject", "fault": {"kind": "drop", ...}}`` -> ``{"t": unix time, "applied": [session ids]}``
  (the fields of ``POST /_emulator/faults``; ``t`` is taken just before the fault is applied);
- ``{"op": "restart"}`` -> the same for the ``restart`` fault;
- ``{"op": "sessions"}`` -> ``{"sessions": [...]}`` (the admin API's list);
- a command that fails -> ``{"error": "..."}``.

Why a pipe and not the admin API over HTTP: in the lab the emulator lives in the server network
namespace (bridge.bench.netem), which the bench process cannot reach; its stdin crosses namespaces, and
its timestamps are on the same wall clock as the client's transcript.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
import time
from typing import Any

from aiohttp import web

from bridge.emulator import admin
from bridge.emulator.app import make_app
from bridge.emulator.config import EmulatorConfig
from bridge.emulator.faults import FaultError, parse_fault
from bridge.emulator.state import STATE, EmulatorState

API_KEY = "sk-bench-resilience-0000000000000000"


async def command(state: EmulatorState, cmd: dict[str, Any]) -> dict[str, Any]:
    op = cmd.get("op")
    try:
        if op == "inject":
            fault = parse_fault(dict(cmd["fault"]))
            t = time.time()
            return {"t": t, "applied": await admin.apply_fault(state, fault)}
        if op == "restart":
            t = time.time()
            return {"t": t, "applied": await admin.restart(state)}
        if op == "sessions":
            return {"sessions": admin.sessions_json(state)["sessions"]}
    except (FaultError, LookupError, KeyError, TypeError) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    return {"error": f"unknown op {op!r}"}


async def serve(config: EmulatorConfig, host: str) -> None:
    app = make_app(config)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=2.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, 0)
        await site.start()
        port = runner.addresses[0][1]
        print(json.dumps({"base_url": f"http://{host}:{port}/v1", "api_key": API_KEY}), flush=True)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while line := await reader.readline():
            try:
                cmd = json.loads(line)
            except json.JSONDecodeError as exc:
                reply: dict[str, Any] = {"error": f"not JSON: {exc}"}
            else:
                reply = await command(app[STATE], cmd)
            print(json.dumps(reply), flush=True)
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bridge.bench.resilience_emu")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--config", default="{}", help="EmulatorConfig fields as JSON")
    parser.add_argument("--log", default=None, help="the emulator's JSONL event log")
    args = parser.parse_args(argv)
    fields = json.loads(args.config)
    config = dataclasses.replace(
        EmulatorConfig(),
        api_keys=frozenset({API_KEY}),
        log_path=args.log,
        loopback_ice=args.host == "127.0.0.1",
        **fields,
    )
    asyncio.run(serve(config, args.host))
    return 0


if __name__ == "__main__":
    sys.exit(main())
