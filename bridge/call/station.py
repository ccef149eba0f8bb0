"""The station: the machine's audio for as long as the process runs.

A :class:`Station` owns the microphone (behind a :class:`bridge.media.mic.MicRouter`), the speaker and
the :class:`bridge.media.playout.PlayoutBuffer` between the two. Calls and their connections come and go
(a reconnect, a kiosk's next visitor); the station stays. It opens the speaker at once and the
microphone when the first connection attaches to it (a ``.wav`` microphone starts "talking" then, not
before).

:meth:`Station.run` is the station's own lifetime work, for its owner's TaskGroup: reading a microphone
that has no capture thread, and watching both devices. A device that dies (unplugged, sound server gone)
ends it with one :class:`bridge.errors.AudioError` line.

Echo cancellation (open speakers, issue #16) is the station's too: with both devices sound cards it is on by
default (``--aec auto``), installed on the microphone and the speaker once both are open
(:func:`bridge.media.aec.attach`) and detached, its measured echo delay saved for the next run, before the
devices close. With it, the speaker is never opened on demand: it stays open for the station's life, because
a canceller cannot follow its speaker to a new output stream (:meth:`bridge.media.aec.Attachment.detach`).
:meth:`Station.calibrate` plays a quiet noise burst when no delay is known yet for this pair of devices, so
that even the first reply is cancelled from its first word.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np

from bridge.aio import task_group
from bridge.config import AecMode
from bridge.errors import AudioError, ConfigError
from bridge.media import DeviceSink, DeviceSource, aec, open_sink, open_source, soundserver
from bridge.media.aec_engine import INSTALL_HINT, describe_engine
from bridge.media.base import AudioSink, AudioSource
from bridge.media.mic import LoudnessTap, MicRouter
from bridge.media.playout import PlayoutBuffer

log = logging.getLogger(__name__)

LOW_LATENCY_PLAYOUT_TARGET_MS = 5
"""Paced (WebRTC) reply audio: the least audio left queued after a device pull; grows on underruns
(:class:`PlayoutBuffer`). WebSocket audio arrives in bursts and is played as a queue (no target)."""

CALIBRATION_TAIL_S = 0.3
"""After the calibration burst, how long its echo may still be arriving."""
CALIBRATION_WAIT_S = 2.5
"""After the calibration burst, how long to wait at most for the echo delay to be measured."""


def echo_cancellation(mode: AecMode, source: AudioSource, sink: AudioSink) -> aec.AecSettings | None:
    """``--aec``: settings when echo cancellation is to run on this pair of devices, else None.

    ``auto``: on when both are sound cards (as a browser's ``getUserMedia``), off for ``.wav`` / ``null`` and
    (with one warning line) when the engine is not installed. ``on`` where it cannot run is a
    :class:`ConfigError`."""
    if mode == "off":
        log.info("echo cancellation off (--aec off)")
        return None
    devices = isinstance(source, DeviceSource) and isinstance(sink, DeviceSink)
    engine = describe_engine()
    if mode == "on" and not devices:
        raise ConfigError("--aec on needs a sound card for both --input and --output (not a .wav file or null)")
    if mode == "on" and engine is None:
        raise ConfigError(f"--aec on: the echo canceller is not installed ({INSTALL_HINT})")
    if not devices:
        log.info("echo cancellation off (a .wav file or null cannot echo)")
        return None
    if engine is None:
        aec.warn_missing_engine()
        return None
    log.info("echo cancellation on: %s", engine)
    return aec.AecSettings()


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
        speaker_on_demand: Callable[[], AudioSink] | None = None,
        echo: aec.AecSettings | None = None,
    ) -> None:
        """``watch_devices``: a device the sound server takes away (and quietly replaces) ends the station
        like a dead one (:mod:`bridge.media.soundserver`; a kiosk wants that, a desktop the fallback).
        ``echo``: cancel the speaker's echo in the microphone with these settings (sound cards only)."""
        self.source = source
        self.sink = sink
        self.playout = playout
        self.mic = MicRouter(source)
        self.activity = LoudnessTap()
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
        self._new_sink = speaker_on_demand
        self._sink_open = False
        self._sink_changes = 0
        self._sink_changed = asyncio.Event()
        self.echo_settings = echo
        self.echo: aec.Attachment | None = None
        """The echo canceller, once both devices are open (None: off, or its engine failed to load)."""
        self._prelude: tuple[np.ndarray, int] | None = None  # audio mixed into the speaker's next pulls

    @property
    def cancels_echo(self) -> bool:
        """Echo cancellation is meant to run on this station (``--aec``; the session asks for far-field
        noise reduction then)."""
        return self.echo_settings is not None

    @classmethod
    def for_devices(
        cls,
        input_dev: str | None,
        output_dev: str | None,
        *,
        paced_replies: bool,
        watch_devices: bool = False,
        expected: soundserver.Placement | None = None,
        speaker_on_demand: bool = False,
        aec_mode: AecMode = "off",
    ) -> Station:
        """``--input`` / ``--output`` DEV strings (index, name, FILE.wav, null, None for the default).
        ``paced_replies``: reply audio arrives in real time (WebRTC), so playout keeps a small margin.
        ``speaker_on_demand``: the speaker is opened by :meth:`speaker_on` and closed by :meth:`speaker_off`
        (a kiosk idles with the microphone alone: the output stream is most of the sound stack's CPU).
        ``aec_mode``: ``--aec`` (:func:`echo_cancellation`)."""
        target = LOW_LATENCY_PLAYOUT_TARGET_MS if paced_replies else None
        source, sink = open_source(input_dev), open_sink(output_dev)
        echo = echo_cancellation(aec_mode, source, sink)
        if echo is not None:  # a steadier speaker, or a busy CPU makes the canceller leak (aec.SPEAKER_LATENCY_S)
            sink = open_sink(output_dev, latency=aec.SPEAKER_LATENCY_S)
        watch = watch_devices and isinstance(source, DeviceSource) and soundserver.available()
        return cls(
            source,
            sink,
            PlayoutBuffer(target_ms=target),
            watch_devices=watch,
            expected=expected,
            # with echo cancellation the speaker stays open (see the module docstring)
            speaker_on_demand=(lambda: open_sink(output_dev)) if speaker_on_demand and echo is None else None,
            echo=echo,
        )

    @contextlib.asynccontextmanager
    async def opened(self) -> AsyncIterator[Station]:
        """The speaker plays (silence until a reply comes) for the duration of the block; both devices are
        closed at its end."""
        try:
            if self._new_sink is None:
                await self._open_sink()
            yield self
        finally:
            if self.echo is not None:
                self.echo.detach()
            await self.mic.aclose()
            await self.sink.aclose()

    async def _open_sink(self) -> None:
        await self.sink.start(self._pull)
        self.playout.set_output_latency(self.sink.output_latency)
        self._sink_open = True
        self._sink_changes += 1
        self._sink_changed.set()
        self._cancel_echo()

    def _pull(self, n: int) -> np.ndarray:
        """The speaker's pull (its thread): the playout, with a prelude (the calibration burst) mixed in."""
        out = self.playout.pull(n)
        prelude = self._prelude
        if prelude is None:
            return out
        pcm, at = prelude
        part = pcm[at : at + n]
        self._prelude = (pcm, at + n) if at + n < len(pcm) else None
        mixed = out.astype(np.int32)
        mixed[: len(part)] += part
        return np.clip(mixed, -32768, 32767).astype(np.int16)

    def _cancel_echo(self) -> None:
        """Install echo cancellation once both devices are open."""
        if self.echo_settings is None or self.echo is not None or not self._sink_open or not self.mic.started:
            return
        source, sink = self.source, self.sink
        if not isinstance(source, DeviceSource) or not isinstance(sink, DeviceSink):
            return  # (echo_cancellation() allows sound cards only)
        self.echo = aec.attach(source, sink, self.echo_settings)
        if self.echo is None:  # the engine did not load (one warning line): carry on without
            self.echo_settings = None

    async def calibrate(self, announce: Callable[[str], None] | None = None) -> bool:
        """When echo cancellation runs but knows no echo delay for these devices yet (the first run on them),
        play a quiet 0.6 s noise burst and wait for it and its echo to end: the canceller finds the echo
        path from it before the first reply (a path longer than its engine's own range included). Opens the
        microphone. ``announce`` is told first, in words for the user. True if the burst was played."""
        if self.echo_settings is None:
            return False
        await self.start_mic()
        if self.echo is None or self.echo.warm:
            return False
        if announce is not None:
            announce("measuring the echo of these speakers (once for this pair of devices): a short hiss")
        burst = aec.calibration_sound()
        self._prelude = (burst, 0)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + len(burst) / aec.RATE + self.sink.output_latency + CALIBRATION_WAIT_S
        await asyncio.sleep(len(burst) / aec.RATE + self.sink.output_latency + CALIBRATION_TAIL_S)
        # the delay is measured in PortAudio's capture thread (two estimates 0.5 s apart agreeing): poll it
        while self.echo.canceller.delay_ms is None and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        metrics = self.echo.metrics()
        if metrics.delay_ms is None:
            log.warning("echo cancellation: no echo heard from the calibration sound (%s)", metrics.line())
        else:
            log.info("echo cancellation calibrated: %s", metrics.line())
        return True

    async def speaker_on(self) -> None:
        """Open the speaker (on demand: see :meth:`for_devices`); idempotent."""
        if not self._sink_open:
            await self._open_sink()

    async def speaker_off(self) -> None:
        """Close the speaker until the next :meth:`speaker_on` (on demand only); idempotent."""
        if self._new_sink is None or not self._sink_open:
            return
        sink, self.sink = self.sink, self._new_sink()
        self._sink_open = False
        self._sink_changes += 1
        self._sink_changed.set()
        await sink.aclose()

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
        self._cancel_echo()

    async def run(self) -> None:
        """The station's lifetime work (see module docstring); raises :class:`AudioError` when a device dies."""
        async with task_group() as tg:
            tg.create_task(self._read_mic(), name="mic")
            tg.create_task(self._watch(self.source, "microphone"), name="mic-watch")
            tg.create_task(self._watch_speaker(), name="speaker-watch")
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
        watch = soundserver.SoundServerWatch(expected, speaker=lambda: (self._sink_open, self._sink_changes))
        where = await soundserver.placement()
        for _ in range(20):  # the streams show up a moment after they open
            if watch.matches(where):
                break
            await asyncio.sleep(0.25)
            where = await soundserver.placement()
        else:
            watch.check(where)  # not where they were opened: a device is gone
        self.placement = expected
        self.watching.set()
        log.info("sound server: microphone on %r, speaker on %r", expected.source, expected.sink)
        await watch.run()

    async def _watch_speaker(self) -> None:
        """:meth:`_watch` of whichever sink is the speaker now (it changes when opened on demand)."""
        while True:
            self._sink_changed.clear()
            async with task_group() as tg:
                dead = tg.create_task(self._watch(self.sink, "speaker"))
                changed = tg.create_task(self._sink_changed.wait())
                await asyncio.wait({dead, changed}, return_when=asyncio.FIRST_COMPLETED)
                dead.cancel()
                changed.cancel()

    async def _watch(self, device: AudioSource | AudioSink, what: str) -> None:
        exc = await device.faults.wait_fatal()
        raise AudioError(f"the {what} failed: {exc}") from exc

    def describe(self) -> dict[str, Any]:
        """``session``-line fields: the devices, and each ``.wav`` file's first-sample time."""
        out: dict[str, Any] = {
            "input": self.source.describe(),
            "output": self.sink.describe(),
            "aec": describe_engine() if self.cancels_echo else "off",
        }
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
            "playout_jitter_ms": self.playout.jitter_ms,
            "mic_dropped": mic["dropped"],
            "mic_overflows": mic.get("overflows", 0),  # sound card input lost (callback late)
            "mic_errors": mic["errors"],
            "mic_unrouted": self.mic.unrouted,
            "sink_underruns": speaker.get("underruns", 0),
            "sink_errors": speaker["errors"],
            **({"aec": dataclasses.asdict(self.echo.metrics())} if self.echo is not None else {}),
        }
