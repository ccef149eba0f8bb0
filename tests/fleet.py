"""A fleet for the tests: ``bridge serve --redis-url`` replicas as real processes on loopback ports.

Each replica's stdout/stderr go to files in its own directory (``out``, ``err``), its transcripts to
``transcripts/``. ``kill()`` is ``kill -9``; ``term()`` is SIGTERM (the graceful handover).
Also: a browser-like aiortc peer that talks to a replica's ``/api/call`` like the page does.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiortc import AudioStreamTrack, RTCConfiguration, RTCDataChannel, RTCPeerConnection, RTCSessionDescription

ROOT = Path(__file__).resolve().parents[1]
_URL = re.compile(r"open (http://127\.0\.0\.1:(\d+)/) in a browser")


@dataclass
class Replica:
    name: str
    dir: Path
    proc: subprocess.Popen[bytes]
    url: str = ""
    port: int = 0

    @property
    def transcripts(self) -> Path:
        return self.dir / "transcripts"

    def out(self) -> str:
        return (self.dir / "out").read_text(errors="replace")

    def err(self) -> str:
        return (self.dir / "err").read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """``kill -9``: no cleanup at all; the kernel closes its sockets."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def term(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_replicas(
    names: Sequence[str],
    base: Path,
    *,
    redis_url: str | None,
    api_base: str,
    api_key: str,
    args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> list[Replica]:
    """Start every replica at once, then wait until each prints its URL (they import in parallel)."""
    replicas = []
    for name in names:
        d = base / name
        d.mkdir(parents=True, exist_ok=True)
        e = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "BRIDGE_"))}
        e.update({"OPENAI_API_KEY": api_key, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)})
        e.update(env or {})
        cmd = [sys.executable, "-m", "bridge", "serve", "--port", "0", "--api-base", api_base, "--replica-id", name]
        cmd += ["--transcripts-dir", str(d / "transcripts")]
        if redis_url is not None:
            cmd += ["--redis-url", redis_url]
        cmd += list(args)
        with (d / "out").open("wb") as out, (d / "err").open("wb") as err:
            proc = subprocess.Popen(cmd, cwd=d, env=e, stdout=out, stderr=err)
        replicas.append(Replica(name, d, proc))
    deadline = time.monotonic() + timeout
    for r in replicas:
        while not r.url:
            found = _URL.search(r.out())
            if found:
                r.url, r.port = found.group(1).rstrip("/"), int(found.group(2))
                break
            if not r.alive():
                raise AssertionError(f"replica {r.name} exited with {r.proc.returncode}: {r.err()[-2000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"replica {r.name} did not start: {r.err()[-2000:]}")
            time.sleep(0.05)
    return replicas


async def until(pred: Callable[[], bool], what: str, timeout: float = 15.0, step: float = 0.01) -> float:
    """Poll ``pred`` until true; returns the seconds it took. AssertionError with ``what`` on timeout."""
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(step)
    return time.monotonic() - t0


def metric(text: str, name: str, **labels: str) -> float:
    """One sample's value from Prometheus text (0 when absent)."""
    for line in text.splitlines():
        found = _SAMPLE.match(line)
        if found and found.group(1) == name and dict(_LABEL.findall(found.group(2) or "")) == labels:
            return float(found.group(3))
    return 0.0


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'(\w+)="([^"]*)"')


@dataclass
class Browser:
    """What the page does with ``--agents``: data channel + mic track before the offer, offer to a
    replica's ``/api/call``, the answer back; user turns as typed text on the data channel."""

    token: str | None = None
    pc: RTCPeerConnection = field(default_factory=lambda: RTCPeerConnection(RTCConfiguration(iceServers=[])))
    events: list[dict[str, Any]] = field(default_factory=list)
    channel: RTCDataChannel | None = None

    def __post_init__(self) -> None:
        self.channel = self.pc.createDataChannel("oai-events")
        self.pc.addTrack(AudioStreamTrack())  # a browser's microphone, silent
        self.channel.on("message", lambda m: self.events.append(json.loads(m)))

    def headers(self, sdp: bool = True) -> dict[str, str]:
        h = {"Content-Type": "application/sdp"} if sdp else {}
        if self.token:
            h["Authorization"] = f"Bearer {self.token}"
        return h

    async def offer(self) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return str(self.pc.localDescription.sdp)

    async def call(self, http: aiohttp.ClientSession, base: str) -> tuple[int, str, dict[str, str]]:
        async with http.post(f"{base}/api/call", data=await self.offer(), headers=self.headers()) as resp:
            return resp.status, await resp.text(), dict(resp.headers)

    async def answer(self, sdp: str) -> None:
        assert self.channel is not None
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp, "answer"))
        opened = asyncio.Event()
        if self.channel.readyState == "open":
            opened.set()
        self.channel.on("open", opened.set)
        await asyncio.wait_for(opened.wait(), 10)

    def say(self, text: str) -> None:
        assert self.channel is not None
        item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
        self.channel.send(json.dumps({"type": "conversation.item.create", "item": item}))
        self.channel.send(json.dumps({"type": "response.create"}))

    async def hangup(self, http: aiohttp.ClientSession, base: str, call_id: str) -> tuple[int, dict[str, Any]]:
        async with http.post(f"{base}/api/call/{call_id}/hangup", headers=self.headers(sdp=False)) as resp:
            return resp.status, await resp.json()

    async def close(self) -> None:
        await self.pc.close()
