"""Watching the sound server (PulseAudio, or PipeWire's pulse layer) for devices that go away.

A stream through PortAudio's ALSA ``pulse``/``default`` device does not fail when its device is unplugged
or unloaded: the sound server moves it to a fallback device and it carries on (measured here: after
``pactl unload-module`` of the microphone's source, 100 more frames in 2 s, no error, no status flag).
For a desktop that is a kindness (the laptop's microphone takes over from an unplugged headset); for a
kiosk it is a silent failure, or worse (a fallback that is a speaker's monitor hears the kiosk itself).
A restarted sound server, by contrast, does end the streams (PortAudio's finished callback: a fatal
fault of the device).

:class:`SoundServerWatch` follows ``pactl subscribe`` (one long-lived process; no polling while nothing
changes) and, on an event about sources, sinks or streams, asks ``pactl -f json`` which devices this
process's streams are on now. When a stream is gone or has moved off the device it started on, the watch
ends with one :class:`bridge.errors.AudioError` naming both. :func:`pin` makes the next streams open on
named devices again (``PULSE_SOURCE`` / ``PULSE_SINK``, read by libpulse when a stream connects).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bridge.errors import AudioError

log = logging.getLogger(__name__)

PACTL = "pactl"
QUERY_TIMEOUT_S = 3.0
SETTLE_S = 0.2  # events come in bursts (one unplug: ~10): look once the burst is over
WATCHED = ("source", "sink", "source-output", "sink-input", "server")


@dataclass(frozen=True)
class Placement:
    """The sound-server devices this process's streams are on (None: no such stream)."""

    source: str | None
    sink: str | None


def available() -> bool:
    """A pulse-compatible sound server answers ``pactl`` here."""
    return shutil.which(PACTL) is not None and bool(os.environ.get("PULSE_SERVER") or os.environ.get("XDG_RUNTIME_DIR"))


async def _pactl_json(*args: str) -> Any:
    proc = await asyncio.create_subprocess_exec(
        PACTL, "-f", "json", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        async with asyncio.timeout(QUERY_TIMEOUT_S):
            out, _ = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AudioError("the sound server did not answer pactl within 3 s") from None
    if proc.returncode != 0:
        raise AudioError("the sound server is not answering (pactl failed)")
    try:
        return json.loads(out or b"[]")
    except json.JSONDecodeError as exc:
        raise AudioError("pactl answered something that is not JSON") from exc


async def placement(pid: int | None = None) -> Placement:
    """Where this process's first capture and playback streams are now."""
    me = str(pid or os.getpid())
    sources = {s.get("index"): s.get("name") for s in await _pactl_json("list", "sources")}
    sinks = {s.get("index"): s.get("name") for s in await _pactl_json("list", "sinks")}
    outputs = await _pactl_json("list", "source-outputs")
    source = next((sources.get(o.get("source")) for o in outputs if _pid(o) == me), None)
    sink = next((sinks.get(i.get("sink")) for i in await _pactl_json("list", "sink-inputs") if _pid(i) == me), None)
    return Placement(source, sink)


def _pid(stream: dict[str, Any]) -> str | None:
    props = stream.get("properties")
    return props.get("application.process.id") if isinstance(props, dict) else None


async def _line(stream: asyncio.StreamReader) -> str:
    line = await stream.readline()
    if not line:
        raise AudioError("the sound server went away")
    return line.decode(errors="replace")


def _relevant(event: str) -> bool:
    """``Event 'remove' on source #2``: about devices or streams (not the clients pactl itself makes)."""
    return any(f" on {kind} #" in event for kind in WATCHED)


async def defaults() -> Placement:
    """The devices streams open on: ``PULSE_SOURCE`` / ``PULSE_SINK`` when set, else the server's defaults."""
    info = await _pactl_json("info")
    source = os.environ.get("PULSE_SOURCE") or (info.get("default_source_name") if isinstance(info, dict) else None)
    sink = os.environ.get("PULSE_SINK") or (info.get("default_sink_name") if isinstance(info, dict) else None)
    return Placement(source, sink)


def pin(where: Placement) -> None:
    """Open the next streams on these devices (libpulse reads ``PULSE_SOURCE`` / ``PULSE_SINK``)."""
    for var, name in (("PULSE_SOURCE", where.source), ("PULSE_SINK", where.sink)):
        if name:
            os.environ[var] = name


async def present(where: Placement) -> bool:
    """Both devices of ``where`` exist on the sound server now."""
    sources = {s.get("name") for s in await _pactl_json("list", "sources")}
    sinks = {s.get("name") for s in await _pactl_json("list", "sinks")}
    return (where.source is None or where.source in sources) and (where.sink is None or where.sink in sinks)


SpeakerState = tuple[bool, int]
"""Whether a playback stream should exist now, and how many times it has been opened or closed."""


class SoundServerWatch:
    """Ends with :class:`AudioError` when this process's streams leave the devices they started on
    (``speaker``: :data:`SpeakerState`; a kiosk closes the speaker while idle and opens it per call)."""

    def __init__(self, expected: Placement, speaker: Callable[[], SpeakerState] = lambda: (True, 0)) -> None:
        self.expected = expected
        self._speaker = speaker

    def matches(self, now: Placement) -> bool:
        sink_ok = not self._speaker()[0] or self.expected.sink is None or now.sink == self.expected.sink
        return (self.expected.source is None or now.source == self.expected.source) and sink_ok

    async def run(self) -> None:
        proc = await asyncio.create_subprocess_exec(
            PACTL, "subscribe", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
        )
        assert proc.stdout is not None
        try:
            while True:
                if not _relevant(await _line(proc.stdout)):
                    continue
                while True:  # the rest of the burst
                    try:
                        async with asyncio.timeout(SETTLE_S):
                            await _line(proc.stdout)
                    except TimeoutError:
                        break
                speaker = self._speaker()
                now = await placement()
                if self._speaker() != speaker:
                    continue  # the speaker opened or closed while the server was asked: its events come next
                self.check(now)
        finally:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()

    def check(self, now: Placement) -> None:
        """Raise :class:`AudioError` unless ``now`` is where the streams started."""
        log.debug("sound server: streams on %s (expected %s)", now, self.expected)
        if self.matches(now):
            return
        role, was, is_ = "microphone", self.expected.source, now.source
        if was is None or is_ == was:
            role, was, is_ = "speaker", self.expected.sink, now.sink
        moved = f"the sound server moved the stream to {is_!r}" if is_ else "the stream is gone"
        raise AudioError(f"the {role} {was!r} went away ({moved})")
