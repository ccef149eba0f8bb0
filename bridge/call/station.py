"""The station: the machine's audio for as long as the process runs.

A :class:`Station` owns the microphone (behind a :class:`bridge.media.mic.MicRouter`), the speaker and
the :class:`bridge.media.playout.PlayoutBuffer` between the two. Calls and their connections come and go
(a reconnect, a kiosk's next visitor); the station stays. It opens the speaker at once and the
microphone when the first connection attaches to it (a ``.wav`` microphone starts "talking" then, not
before).

:meth:`Station.run` is the station's own lifetime work, for its owner's TaskGroup: reading a microphone
that has no capture thread, and watching both devices. A device that dies (unplugged, sound server gone)
ends it with one :class:`bridge.errors.AudioError` line.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator
from typing import Any

from bridge.aio import task_group
from bridge.errors import AudioError
from bridge.media import DeviceSource, open_sink, open_source, soundserver
from bridge.media.base import AudioSink, AudioSource
from bridge.media.mic import MicRouter, VoiceActivity
from bridge.media.playout import PlayoutBuffer

log = logging.getLogger(__name__)

LOW_LATENCY_PLAYOUT_TARGET_MS = 5
"""Paced (WebRTC) reply audio: the least audio left queued after a device pull; grows on underruns
(:class:`PlayoutBuffer`). WebSocket audio arrives in bursts and is played as a queue (no target)."""


class Station:
    """Microphone, speaker and playout (see module docstring)."""

    def __init__(
        self,
        source: AudioSource,
        sink: AudioSink,
        playout: PlayoutBuffer,
        *,
        watch_devices: bool = False,
        expected: soundserver.Placement | None = None,
    ) -> None:
        """``watch_devices``: a device the sound server takes away (and quietly replaces) ends the station
        like a dead one (:mod:`bridge.media.soundserver`; a kiosk wants that, a desktop the fallback)."""
        self.source = source
        self.sink = sink
        self.playout = playout
        self.mic = MicRouter(source)
        self.activity = VoiceActivity()
        """When the room was last loud (a tap on the microphone)."""
        self.mic.add_tap(self.activity)
        self._mic_started = asyncio.Event()
        self._watch_devices = watch_devices
        self.placement: soundserver.Placement | None = expected
        """The sound-server devices the streams are on (when watched; given: the ones they must be on)."""
        self.watching = asyncio.Event()
        """Set once the devices are known to be where they should be (at once when not watched)."""
        if not watch_devices:
            self.watching.set()

    @classmethod
    def for_devices(
        cls,
        input_dev: str | None,
        output_dev: str | None,
        *,
        paced_replies: bool,
        watch_devices: bool = False,
        expected: soundserver.Placement | None = None,
    ) -> Station:
        """``--input`` / ``--output`` DEV strings (index, name, FILE.wav, null, None for the default).
        ``paced_replies``: reply audio arrives in real time (WebRTC), so playout keeps a small margin."""
        target = LOW_LATENCY_PLAYOUT_TARGET_MS if paced_replies else None
        source, sink = open_source(input_dev), open_sink(output_dev)
        watch = watch_devices and isinstance(source, DeviceSource) and soundserver.available()
        return cls(source, sink, PlayoutBuffer(target_ms=target), watch_devices=watch, expected=expected)

    @contextlib.asynccontextmanager
    async def opened(self) -> AsyncIterator[Station]:
        """The speaker plays (silence until a reply comes) for the duration of the block; both devices are
        closed at its end."""
        try:
            await self.sink.start(self.playout.pull)
            self.playout.set_output_latency(self.sink.output_latency)
            yield self
        finally:
            await self.mic.aclose()
            await self.sink.aclose()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Station]:
        """:meth:`opened`, with the station's own work (:meth:`run`) going on for the duration of the block;
        a device that dies cancels the block and surfaces as :class:`AudioError`."""
        async with self.opened(), task_group() as tg:
            work = tg.create_task(self.run(), name="station")
            try:
                yield self
            finally:
                work.cancel()

    async def start_mic(self) -> None:
        """Open the microphone (idempotent): the first connection calls this as it attaches."""
        await self.mic.start()
        self._mic_started.set()

    async def run(self) -> None:
        """The station's lifetime work (see module docstring); raises :class:`AudioError` when a device dies."""
        async with task_group() as tg:
            tg.create_task(self._read_mic(), name="mic")
            tg.create_task(self._watch(self.source, "microphone"), name="mic-watch")
            tg.create_task(self._watch(self.sink, "speaker"), name="speaker-watch")
            if self._watch_devices:
                tg.create_task(self._watch_sound_server(), name="sound-server-watch")

    async def _read_mic(self) -> None:
        await self._mic_started.wait()
        await self.mic.run()

    async def _watch_sound_server(self) -> None:
        """Where the devices are the sound server's (PulseAudio, PipeWire): the streams were pinned to named
        devices before they opened (:func:`soundserver.pin`, by the owner); end with :class:`AudioError`
        when the server moves them off those (an unplugged device) or drops them."""
        await self._mic_started.wait()
        expected = self.placement or await soundserver.defaults()
        where = await soundserver.placement()
        for _ in range(20):  # the streams show up a moment after they open
            if where == expected:
                break
            await asyncio.sleep(0.25)
            where = await soundserver.placement()
        else:
            soundserver.SoundServerWatch(expected).check(where)  # not where they were opened: a device is gone
        self.placement = where
        self.watching.set()
        log.info("sound server: microphone on %r, speaker on %r", where.source, where.sink)
        await soundserver.SoundServerWatch(where).run()

    async def _watch(self, device: AudioSource | AudioSink, what: str) -> None:
        exc = await device.faults.wait_fatal()
        raise AudioError(f"the {what} failed: {exc}") from exc

    def describe(self) -> dict[str, Any]:
        """``session``-line fields: the devices, and each ``.wav`` file's first-sample time."""
        out: dict[str, Any] = {"input": self.source.describe(), "output": self.sink.describe()}
        for name, dev in (("input_start_unix", self.source), ("output_start_unix", self.sink)):
            if dev.start_unix:
                out[name] = round(float(dev.start_unix), 6)
        return out

    def stats(self) -> dict[str, Any]:
        """``stats``-line fields: playout, microphone and speaker counters."""
        mic, speaker = self.source.stats(), self.sink.stats()
        return {
            "playout": dataclasses.asdict(self.playout.counters),
            "playout_target_ms": self.playout.target_ms,
            "mic_dropped": mic["dropped"],
            "mic_overflows": mic.get("overflows", 0),  # sound card input lost (callback late)
            "mic_errors": mic["errors"],
            "mic_unrouted": self.mic.unrouted,
            "sink_underruns": speaker.get("underruns", 0),
            "sink_errors": speaker["errors"],
        }
