"""The conversation runtime over any link: events in, barge-in, transcript, console, per-turn latency.

One :class:`Runtime` per call. It owns one ``asyncio.TaskGroup``: the event pump, the link's audio pump
and the transcript timer; when one fails the others are cancelled and the error surfaces.

Barge-in (``input_audio_buffer.speech_started`` while assistant audio is queued or playing):

- both transports: ``playout.flush(fade_ms)`` (the sink stops within one device block, with a short
  fade) and audio of the interrupted item that is still in flight is discarded;
- WebRTC: the server truncates by itself at what it has SENT (PROTOCOL.md 2.3); we only record how far
  its ``conversation.item.truncated.audio_end_ms`` is from what we actually played;
- WebSocket: we tell the server what was heard: ``response.cancel`` when the server is not already
  cancelling (``interrupt_response`` off), then ``conversation.item.truncate`` with
  ``audio_end_ms = min(played, received)`` (PROTOCOL.md 4.5); nothing played yet means the item is
  deleted instead of truncated to 0; an item that finished playing is left alone.

Timelines: the server's ``audio_start_ms``/``audio_end_ms`` count from the first input audio it received.
We map them to our monotonic clock from the moment our first microphone frame left (``mic_t0``), which is
exact up to the one-way network delay.
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

from bridge.link.base import RealtimeLink
from bridge.media.paced import until_grid
from bridge.media.playout import FlushResult, ItemStats
from bridge.protocol import events as ev
from bridge.protocol import pcm
from bridge.transcript import Conversation, Item, TranscriptWriter

log = logging.getLogger(__name__)

FADE_MS = 5
BargeInMode = Literal["exact", "naive"]  # naive: keep playing (what a plain client does); for comparisons
UNKNOWN_ITEM = "?"  # WebRTC audio that arrives before its item is announced
TICK_S = 0.1  # housekeeping period, on the paced clocks' grid; latencies come from recorded timestamps
TRUNCATED_WAIT_S = 1.0  # extra time for the server's conversation.item.truncated (WebRTC)
KNOWN_SHAPES = ev.TYPED  # event types parse() turns into typed events when well formed
STOP_WAIT_S = 0.5  # how long to wait for the sink to report playback stopped after a flush


class Playout(Protocol):
    """What the runtime needs from :class:`bridge.media.playout.PlayoutBuffer`."""

    output_latency: float

    def push(self, pcm48: np.ndarray, item_id: str, content_index: int = 0) -> int: ...
    def flush(self, fade_ms: float = FADE_MS, *, discard: bool = True) -> FlushResult: ...
    def end_item(self, item_id: str, content_index: int = 0) -> None: ...
    def ungate(self, item_id: str) -> None: ...
    def played_ms(self, item_id: str, content_index: int = 0, now: float | None = None) -> float: ...
    def handed_ms(self, item_id: str, content_index: int = 0) -> float: ...
    def stats(self, item_id: str, content_index: int = 0) -> ItemStats | None: ...
    @property
    def queued_ms(self) -> float: ...


class FunctionCallHandler(Protocol):
    """Runs tools and handoffs (``bridge.agents``). Called in the runtime's TaskGroup for each call."""

    async def on_function_call(self, call: ev.FunctionCall, runtime: Runtime) -> None: ...
    def on_event(self, event: ev.Event) -> None:
        """Every server event, in order, before the runtime acts on it (tracks responses and calls)."""


class Console(Protocol):
    def line(self, who: str, text: str) -> None: ...
    def error(self, text: str) -> None: ...


class PrintConsole:
    """Plain stdout console: one readable line per turn, errors on stderr."""

    def line(self, who: str, text: str) -> None:
        print(f"{who:>10}: {text}", flush=True)

    def error(self, text: str) -> None:
        import sys

        print(f"error: {text}", file=sys.stderr, flush=True)


@dataclass
class TurnDetection:
    """The parts of the effective session config the runtime needs (from session.created/updated)."""

    enabled: bool = True
    interrupt_response: bool = True
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 200
    transcription: bool = False

    @classmethod
    def from_session(cls, session: dict[str, Any]) -> TurnDetection:
        audio_in = ((session.get("audio") or {}).get("input")) or {}
        td = audio_in.get("turn_detection")
        transcription = bool(audio_in.get("transcription"))
        if not td:
            return cls(enabled=False, interrupt_response=False, transcription=transcription)
        return cls(
            enabled=True,
            interrupt_response=bool(td.get("interrupt_response", True)),
            prefix_padding_ms=int(td.get("prefix_padding_ms") or 0),
            silence_duration_ms=int(td.get("silence_duration_ms") or 0),
            transcription=transcription,
        )


@dataclass
class Metrics:
    """Numbers the latency lab and the tests read."""

    response_ms: list[float] = field(default_factory=list)
    bargein_ms: list[float] = field(default_factory=list)
    stop_after_event_ms: list[float] = field(default_factory=list)
    truncate_gap_ms: list[float] = field(default_factory=list)
    dropped_late_audio_ms: float = 0.0
    errors: int = 0
    malformed: int = 0  # server events we could not use (shape known, content broken)


@dataclass
class BargeIn:
    """One barge-in: when it was detected, what had been played, and what the server later said."""

    item_id: str
    t_event: float  # monotonic: speech_started arrived (or the push-to-talk key)
    event_unix: float
    onset: float | None  # monotonic: the user's speech began (from the server's audio_start_ms)
    played_ms: float
    flush: FlushResult | None = None
    truncate_gap_ms: float | None = None  # WebRTC: the server's audio_end_ms minus played_ms
    truncated: asyncio.Event = field(default_factory=asyncio.Event)


class Runtime:
    def __init__(
        self,
        link: RealtimeLink,
        playout: Playout,
        transcript: TranscriptWriter,
        console: Console | None = None,
        clock: Callable[[], float] = time.monotonic,
        tools: FunctionCallHandler | None = None,
        bargein_mode: BargeInMode = "exact",
    ) -> None:
        self.link = link
        self.tools = tools
        self.bargein_mode: BargeInMode = bargein_mode
        self.playout = playout
        self.transcript = transcript
        self.console = console or PrintConsole()
        self.clock = clock
        self.conv = Conversation(clock=clock)
        self.metrics = Metrics()
        self.turns = TurnDetection()
        self.session: dict[str, Any] = {}
        self.session_info: dict[str, Any] = {}  # devices, connect timings: added to the `session` line
        self.mic_t0: float | None = None
        self.events_seen = 0
        self._response_id: str | None = None  # the response currently writing to the conversation
        self._audio_item: str | None = None  # assistant item whose audio is arriving now
        self._gate_closed = False  # WebRTC: drop RTP audio after a barge-in until the next response
        self._received_ms: dict[str, float] = {}
        self._response_item: dict[str, str] = {}  # response id -> its assistant message item
        self._audio_done: set[str] = set()
        self._interrupted: set[str] = set()
        self._speech_end: float | None = None  # local time the user stopped speaking (pending response)
        self._pending_delete: dict[str, str] = {}  # response_id -> item to delete once it is done
        self._bargein: BargeIn | None = None
        self._started = False
        self._tg: asyncio.TaskGroup | None = None
        self.closed = asyncio.Event()

    # ---- audio from the link (WebRTC receive path) -------------------------------------------------

    def on_remote_audio(self, pcm48: np.ndarray) -> None:
        """A decoded 20 ms frame of model audio (WebRTC). Called on the event loop."""
        if self._gate_closed:
            self.metrics.dropped_late_audio_ms += len(pcm48) / 48
            return
        item = self._audio_item or UNKNOWN_ITEM
        if item not in self._received_ms:
            self._audio_started(item)
        self._received_ms[item] = self._received_ms.get(item, 0.0) + len(pcm48) / 48
        self.playout.push(pcm48, item)

    def _audio_started(self, item_id: str) -> None:
        """Reply audio began: the transcript holds this turn until it has been played (or cut)."""
        self._received_ms.setdefault(item_id, 0.0)
        it = self.conv.get(item_id)
        if it is not None:
            it.audio_pending = True

    def _release_played(self) -> None:
        """Mark replies whose audio has all been handed to the device as heard."""
        for item_id in list(self._audio_done):
            it = self.conv.get(item_id)
            if it is None or not it.audio_pending:
                continue
            if self.playout.handed_ms(item_id) >= self._received_ms.get(item_id, 0.0) - 1:
                it.audio_pending = False

    def on_mic_frame_sent(self, captured_at: float) -> None:
        """A microphone frame left; the first one's capture time is the origin of the server's
        input-audio timeline (``audio_start_ms`` / ``audio_end_ms`` count from it)."""
        if self.mic_t0 is None:
            self.mic_t0 = captured_at

    async def send(self, event: dict[str, Any]) -> None:
        """Send a client event (tools and handoffs use this)."""
        await self.link.send(event)

    # ---- the event pump ----------------------------------------------------------------------------

    async def pump_events(self) -> None:
        while True:
            raw = await self.link.recv()
            if raw is None:
                log.info("link closed")
                self.closed.set()
                return
            self.events_seen += 1
            await self.handle(ev.parse(raw))

    async def handle(self, e: ev.Event) -> None:  # noqa: C901 - one flat dispatch
        if isinstance(e, ev.Other) and e.type in KNOWN_SHAPES:
            self.metrics.malformed += 1  # a type we act on, with fields missing or of the wrong type
            log.warning("dropped a malformed %s event", e.type)
            return
        if self.tools is not None:
            self.tools.on_event(e)
        match e:
            case ev.SessionChanged(session=session):
                self.session = session
                self.turns = TurnDetection.from_session(session)
                if not self._started:
                    self._started = True
                    self.transcript.write(
                        "session",
                        session_id=session.get("id"),
                        model=session.get("model"),
                        transport=self.link.transport,
                        call_id=self.link.call_id,
                        **self.session_info,
                    )
            case ev.SpeechStarted():
                await self._on_speech_started(e)
            case ev.SpeechStopped(audio_end_ms=end_ms):
                if self.mic_t0 is not None:
                    self._speech_end = self.mic_t0 + (end_ms - self.turns.silence_duration_ms) / 1000
            case ev.ItemAdded(item=item, previous_item_id=prev, done=done):
                self._on_item(item, prev, done)
            case ev.InputTranscript(item_id=item_id, text=text, final=final, failed=failed):
                it = self.conv.get(item_id) or self.conv.add(item_id, "user", None)
                it.text = text if final else it.text + text
                if final:
                    it.final = True
                    if not failed:
                        self.console.line("you", text)
                self._flush_transcript()
            case ev.ResponseCreated(response_id=rid):
                self._response_id = rid
                self._gate_closed = False
            case ev.OutputItemAdded(response_id=rid, item=item):
                if item.get("type") == "message" and item.get("role") == "assistant":
                    self._audio_item = item["id"]
                    self._response_item[rid] = item["id"]
            case ev.OutputAudioBuffer(what="stopped", response_id=rid):
                item = self._response_item.get(rid or "")
                if item is not None:  # WebRTC: the server has sent the last sample of this reply
                    self._audio_done.add(item)
                    self.playout.end_item(item)
                    if self._audio_item == item:
                        self._audio_item = None  # what the track sends from now on (silence) is no reply
            case ev.AudioDelta():
                self._on_audio_delta(e)
            case ev.AssistantText(item_id=item_id, text=text, final=final):
                it = self.conv.get(item_id) or self.conv.add(item_id, "assistant", None)
                if final:
                    it.text = text or it.text
                    it.final = True
                    if item_id not in self._interrupted:
                        self.console.line("assistant", it.text)
                    self._flush_transcript()
                else:
                    it.text += text
            case ev.ResponseDone(response_id=rid):
                await self._on_response_done(rid)
            case ev.ItemTruncated(item_id=item_id, audio_end_ms=end_ms):
                self._on_truncated(item_id, end_ms)
            case ev.ServerError():
                self._on_error(e)
            case ev.FunctionCall():
                if self.tools is not None:
                    self._spawn(self.tools.on_function_call(e, self))
                else:
                    log.warning("the model called %s but no tools are configured", e.name)
            case ev.OutputAudioBuffer() | ev.Other():
                pass

    # ---- handlers ----------------------------------------------------------------------------------

    def _on_item(self, item: dict[str, Any], prev: str | None, done: bool) -> None:
        if item.get("type") != "message" or item.get("role") not in ("user", "assistant"):
            return
        it = self.conv.add(item["id"], item["role"], prev)
        if item["id"] in self._received_ms and item["id"] not in self._audio_done:
            it.audio_pending = True  # its audio arrived before the item was announced
        if item["role"] == "user":
            texts = [c.get("text") for c in item.get("content") or [] if c.get("type") == "input_text"]
            if texts and not it.final:
                it.text, it.final = " ".join(t for t in texts if t), True
                self.console.line("you", it.text)
            elif done and not self.turns.transcription and not it.final:
                it.final = True  # no transcription configured: the turn is written with text null
                it.done_at = self.clock()
            elif done:
                it.done_at = self.clock()
        self._flush_transcript()

    def _on_audio_delta(self, e: ev.AudioDelta) -> None:
        if e.item_id in self._interrupted:
            self.metrics.dropped_late_audio_ms += pcm.ms_of(len(e.delta) * 3 // 4)
            return
        try:
            pcm24 = np.frombuffer(pcm.b64decode(e.delta), dtype=np.int16)
        except (binascii.Error, ValueError):
            self.metrics.malformed += 1
            log.warning("dropped an audio delta that is not base64 PCM16 (%d chars)", len(e.delta))
            return
        if e.item_id not in self._received_ms:
            self._audio_started(e.item_id)
        self._received_ms[e.item_id] = self._received_ms.get(e.item_id, 0.0) + len(pcm24) / 24
        self._audio_item = e.item_id
        self.playout.push(pcm.upsample_24k_to_48k(pcm24), e.item_id, e.content_index)

    async def _on_speech_started(self, e: ev.SpeechStarted) -> None:
        onset = None
        if self.mic_t0 is not None:  # audio_start_ms includes the prefix padding (PROTOCOL.md 4.4)
            onset = self.mic_t0 + (e.audio_start_ms + self.turns.prefix_padding_ms) / 1000
        await self._barge_in(onset, manual=False)

    async def interrupt(self) -> None:
        """Manual barge-in (push-to-talk key while the assistant speaks): the server is not cancelling."""
        await self._barge_in(None, manual=True)

    async def _barge_in(self, onset: float | None, manual: bool) -> None:
        t_event, t_unix = self.clock(), time.time()
        item = self._audio_item
        if item is None or item in self._interrupted:
            if manual and self._response_id is not None:
                await self.link.send({"type": "response.cancel"})  # generating, no audio yet
            return
        played = self.playout.played_ms(item)
        received = self._received_ms.get(item, 0.0)
        handed = self.playout.handed_ms(item)  # all of it already inside the device: it will be heard
        finished = item in self._audio_done and handed >= received - 1 and self.playout.queued_ms <= 0
        if finished:
            return  # it all played: nothing to cut, nothing to tell the server
        bargein = BargeIn(item, t_event, t_unix, onset, played)
        self._bargein = bargein
        if self.bargein_mode == "naive":
            # what a plain client does: nothing. Kept to measure the difference (tests, bench).
            self.transcript.write("latency", item_id=item, speech_started_unix=round(t_unix, 6), naive=True)
            return
        bargein.flush = self.playout.flush(FADE_MS, discard=True)  # also gates late audio of the item
        self.playout.ungate(UNKNOWN_ITEM)  # untagged WebRTC audio of later responses must still play
        self._interrupted.add(item)
        self._audio_item = None
        it = self.conv.get(item) or self.conv.add(item, "assistant", None)
        it.interrupted_ms = played
        if item in self._audio_done:
            it.total_ms = received
        if self.link.transport == "webrtc":
            self._gate_closed = True
            if manual:  # PROTOCOL.md 4.5: cancel, then clear; the server truncates at what it sent
                if self._response_id is not None:
                    await self.link.send({"type": "response.cancel"})
                await self.link.send({"type": "output_audio_buffer.clear"})
        else:
            await self._tell_server_what_was_heard(item, played, received, manual)
        self._spawn(self._report_stop(bargein))

    async def _tell_server_what_was_heard(self, item: str, played: float, received: float, manual: bool) -> None:
        """WebSocket barge-in: cancel if the server won't, then truncate at what was heard (or delete)."""
        if self._response_id is not None and (manual or not self.turns.interrupt_response):
            await self.link.send({"type": "response.cancel"})
        end_ms = int(min(played, received))
        if end_ms > 0:
            await self.link.send(
                {"type": "conversation.item.truncate", "item_id": item, "content_index": 0, "audio_end_ms": end_ms}
            )
        elif self._response_id is not None:
            self._pending_delete[self._response_id] = item  # delete once the response has finished
        else:
            await self.link.send({"type": "conversation.item.delete", "item_id": item})

    async def _report_stop(self, b: BargeIn) -> None:
        """Wait (bounded) for the sink to confirm playback stopped, then write the barge-in latency."""
        deadline = self.clock() + STOP_WAIT_S
        flush = b.flush
        assert flush is not None
        while flush.stopped_at is None:
            if self.clock() > deadline:
                log.warning("the sink did not confirm the barge-in flush within %.1f s", STOP_WAIT_S)
                return
            await asyncio.sleep(0.005)
        stopped = flush.stopped_at
        if self.link.transport == "webrtc":  # the server's conversation.item.truncated says what it believes
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(TRUNCATED_WAIT_S):
                    await b.truncated.wait()
        stop_ms = round((stopped - b.t_event) * 1000, 1)
        self.metrics.stop_after_event_ms.append(stop_ms)
        fields: dict[str, Any] = {
            "item_id": b.item_id,
            "speech_started_unix": round(b.event_unix, 6),
            "stop_after_event_ms": stop_ms,
        }
        if b.onset is not None:
            fields["bargein_ms"] = round((stopped - b.onset) * 1000, 1)
            self.metrics.bargein_ms.append(fields["bargein_ms"])
        if b.truncate_gap_ms is not None:
            fields["truncate_gap_ms"] = b.truncate_gap_ms
        self.transcript.write("latency", **fields)

    def _on_truncated(self, item_id: str, end_ms: int) -> None:
        b = self._bargein
        if b is None or b.item_id != item_id:
            return
        gap = round(end_ms - b.played_ms, 1)
        b.truncate_gap_ms = gap
        b.truncated.set()
        self.metrics.truncate_gap_ms.append(gap)
        log.info("server truncated %s at %d ms; played %.0f ms (gap %.1f ms)", item_id, end_ms, b.played_ms, gap)

    async def _on_response_done(self, rid: str) -> None:
        item = self._response_item.get(rid)
        if item is not None and self.link.transport == "ws":
            # WS: every delta has arrived. (WebRTC: response.done comes long before the audio has been
            # streamed; output_audio_buffer.stopped marks the end there.)
            self._audio_done.add(item)
            self.playout.end_item(item)
        if rid == self._response_id:
            self._response_id = None
        item = self._pending_delete.pop(rid, None)
        if item is not None:
            await self.link.send({"type": "conversation.item.delete", "item_id": item})
            self.conv.remove(item)
        self._flush_transcript()

    def _on_error(self, e: ev.ServerError) -> None:
        self.metrics.errors += 1
        benign = e.code == "response_cancel_not_active"
        self.transcript.write("error", type=e.type, code=e.code, message=e.message)
        if not benign:
            self.console.error(f"{e.code or e.type}: {e.message}")

    # ---- latency and transcript ---------------------------------------------------------------------

    def poll_first_audio(self) -> None:
        """Write ``response_ms`` once the sink has played the first sample of the pending reply."""
        item = self._audio_item
        if item is None or self._speech_end is None:
            return
        st = self.playout.stats(item)
        if st is None or st.first_handed is None:
            return
        t = st.first_handed + self.playout.output_latency
        ms = round((t - self._speech_end) * 1000, 1)
        self._speech_end = None
        self.metrics.response_ms.append(ms)
        self.transcript.write("latency", item_id=item, response_ms=ms)

    def _flush_transcript(self, force: bool = False) -> None:
        for item in self.conv.ready(force=force):
            self._write_item(item)

    def _write_item(self, item: Item) -> None:
        line = item.line()
        kind = line.pop("kind")
        self.transcript.write(kind, **line)
        if kind == "interrupted":
            self.console.line("assistant", f"{line['text']} [interrupted at {line['played_ms']} ms]")

    async def tick(self) -> None:
        """Housekeeping: response latency (from the sink's own timestamps), transcript hold-back release."""
        while True:
            self.poll_first_audio()
            self._release_played()
            self._flush_transcript()
            await asyncio.sleep(until_grid(TICK_S))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a short helper task inside the runtime's TaskGroup (never fire-and-forget)."""
        if self._tg is None:
            coro.close()
            return
        self._tg.create_task(coro)

    async def run(self, *pumps: Coroutine[Any, Any, None]) -> None:
        """Pump events (plus the link's ``pumps``) until the link closes; cancel to stop."""
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                tg.create_task(self.pump_events())
                ticker = tg.create_task(self.tick())
                extra = [tg.create_task(p) for p in pumps]
                await self.closed.wait()
                ticker.cancel()
                for task in extra:
                    task.cancel()
        finally:
            self._tg = None
            self.finish()

    def finish(self) -> None:
        """Write everything still held back (end of the call)."""
        self._flush_transcript(force=True)
