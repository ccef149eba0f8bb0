"""Helpers every test suite shares: polling with a deadline, a recording console, a scripted runtime,
transcript reading, and launching ``bridge`` in a clean environment."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bridge.agents import AgentSet
from bridge.call.bargein import BargeInMode
from bridge.call.record import CallRecord
from bridge.call.reply_audio import ReplyAudio
from bridge.call.runtime import FunctionCallHandler, Runtime
from bridge.cli import build_parser
from bridge.config import RunConfig
from bridge.emulator.testing import RunningEmulator
from bridge.link.base import Transport
from bridge.link.scripted import ScriptedLink
from bridge.media.playout import PlayoutBuffer
from bridge.transcript import TranscriptWriter


async def until(pred: Callable[[], object], what: str = "the condition", timeout: float = 10.0) -> None:
    """Poll ``pred`` every 5 ms until it is true; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.1f} s waiting for {what}")
        await asyncio.sleep(0.005)


class Quiet:
    """A console that records instead of printing."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []
        self.errors: list[str] = []

    def line(self, who: str, text: str) -> None:
        self.lines.append((who, text))

    def error(self, text: str) -> None:
        self.errors.append(text)


def transcript_lines(path: Path) -> list[dict[str, Any]]:
    """Every line of a JSONL transcript, parsed (each must be complete JSON)."""
    return [json.loads(x) for x in path.read_text().splitlines()]


def scripted_runtime(
    tmp_path: Path,
    transport: Transport = "ws",
    *,
    tools: FunctionCallHandler | None = None,
    playout: PlayoutBuffer | None = None,
    bargein_mode: BargeInMode = "exact",
) -> tuple[Runtime, ScriptedLink, PlayoutBuffer]:
    """A real :class:`Runtime` over a :class:`ScriptedLink`, writing ``tmp_path/t.jsonl`` and a :class:`Quiet`
    console; the "device" is the test calling ``playout.pull(n)``."""
    link = ScriptedLink(transport)
    playout = playout or PlayoutBuffer()
    tw = TranscriptWriter(tmp_path / "t.jsonl")
    tw.open()
    record = CallRecord(tw, Quiet())
    reply = ReplyAudio(playout, record)
    reply.live = True  # the call's current connection
    rt = Runtime(link, reply, record, tools=tools, bargein_mode=bargein_mode)
    return rt, link, playout


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without any OPENAI_/BRIDGE_ settings of the developer's, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "BRIDGE_"))}
    env.update(extra)
    return env


async def start_bridge(
    *args: str, env: dict[str, str] | None = None, stdin: bool = False
) -> asyncio.subprocess.Process:
    """``python -m bridge ARGS`` in a clean environment (plus ``env``), stdout/stderr piped."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge",
        *args,
        env=clean_env(**(env or {})),
        stdin=asyncio.subprocess.PIPE if stdin else None,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def run_bridge(*args: str, env: dict[str, str] | None = None, timeout: float = 30) -> tuple[int, str, str]:
    """``python -m bridge ARGS`` to the end: (exit code, stdout, stderr)."""
    proc = await start_bridge(*args, env=env)
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def run_config(tmp: Path, base_url: str, transport: str, duration: float, *flags: str, **kw: Any) -> RunConfig:
    """``bridge run`` as the CLI would configure it (flags parsed by the real parser, then the environment):
    ``tmp/in.wav`` in, ``tmp/out.wav`` out, ``tmp/t.jsonl``; ``kw`` overrides parsed fields by name."""
    argv = ["run", "--transport", transport, "--api-base", base_url, "--duration", str(duration)]
    argv += ["--input", str(tmp / "in.wav"), "--output", str(tmp / "out.wav"), "--transcript", str(tmp / "t.jsonl")]
    args = build_parser().parse_args([*argv, *flags])
    for key, value in kw.items():
        setattr(args, key, value)
    return RunConfig.from_args(args)


def active_agents(emu: RunningEmulator, agents: AgentSet) -> list[str]:
    """The agent whose instructions were in force when each response started (emulator's view)."""
    by_text = {agents.instructions_for(name): name for name in agents.agents}
    active, current = [], None
    for e in emu.server_events():
        if e["type"] in ("session.created", "session.updated"):
            current = by_text.get(e["session"].get("instructions"), current)
        elif e["type"] == "response.created":
            active.append(current or "?")
    return active
