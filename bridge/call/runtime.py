"""One connection's runtime: server events in, reply audio tagged, barge-in, per-turn latency.

A :class:`Runtime` lives exactly as long as its link (one Realtime session) and is thrown away with it.
What outlives it belongs to the call: the :class:`bridge.call.record.CallRecord` it writes into
(transcript, conversation order, metrics) and the station's playout it pushes audio to.

It owns one ``asyncio.TaskGroup`` (:meth:`Runtime.run`): the event pump, the link's own media work
(:meth:`bridge.link.base.RealtimeLink.run_media`), the housekeeping tick and short helpers (tool calls,
barge-in reports). When the link closes, the rest is cancelled; when one of them fails, the error surfaces.

Timelines: the server's ``audio_start_ms``/``audio_end_ms`` count from the first input audio it received on
this session. We map them to our monotonic clock from the moment this connection's first microphone frame
was captured (:meth:`Runtime.on_mic_frame_sent`), which is exact up to the one-way network delay.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from bridge.call.bargein import BargeInHandler, BargeInMode
from bridge.call.record import CallRecord, Console, Metrics
from bridge.call.replay import REPLAY_ID_PREFIX, SpokenReplies
from bridge.call.reply_audio import ReplyAudio
from bridge.errors import ConnectError
from bridge.link.base import CloseInfo, CloseReason, RealtimeLink
from bridge.media.paced import until_grid
from bridge.protocol import events as ev
from bridge.transcript import TranscriptWriter

log = logging.getLogger(__name__)

TICK_S = 0.1  # housekeeping period, on the paced clocks' grid; latencies come from recorded timestamps
KNOWN_SHAPES = ev.TYPED  # event types parse() turns into typed events when well formed
ENDING_ERRORS = {
    # error codes after which the server closes the session (PROTOCOL.md 3, 6): the typed reason to end with
    "session_expired": CloseReason.SESSION_EXPIRED,
    "invalid_api_key": CloseReason.AUTH,
    "insufficient_quota": CloseReason.QUOTA,
    "beta_api_shape_disabled": CloseReason.REJECTED,
    "invalid_model": CloseReason.REJECTED,
    "missing_model": CloseReason.REJECTED,
}


class FunctionCallHandler(Protocol):
    """Runs tools and handoffs (``bridge.agents``). Called in the runtime's TaskGroup for each call."""

    async def on_function_call(self, call: ev.FunctionCall, runtime: Runtime) -> None: ...
    def on_event(self, event: ev.Event) -> None:
        """Every server event, in order, before the runtime acts on it (tracks responses and calls)."""


@dataclass
class TurnDetection:
    """The parts of the effective session config the runtime needs (from session.created/updated)."""

    enabled: bool = True
    interrupt_response: bool = True
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 200
    transcription: bool = False

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> TurnDetection:
        audio_in = ((config.get("audio") or {}).get("input")) or {}
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


class Runtime:
    """The runtime of one connection (see module docstring)."""

    def __init__(
        self,
        link: RealtimeLink,
        reply: ReplyAudio,
        record: CallRecord,
        *,
        tools: FunctionCallHandler | None = None,
        bargein_mode: BargeInMode = "exact",
        info: dict[str, Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.link = link
        self.reply = reply
        self.record = record
        self.tools = tools
        self.clock = clock
        self.info: dict[str, Any] = dict(info or {})
        """Fields for this session's transcript ``session`` line (devices, connect timings, ...)."""
        self.turns = TurnDetection()
        self.effective_config: dict[str, Any] = {}
        """The server's effective session configuration (from ``session.created`` / ``session.updated``)."""
        self.session_id: str | None = None
        self.started = asyncio.Event()
        """Set once the server's ``session.created`` (or ``updated``) has been handled."""
        self.expires_at: float | None = None
        """When the server will end this session (Unix time, from ``session.created``; None if not said)."""
        self.user_speaking = False
        self.spoken = SpokenReplies()
        self.mic_t0: float | None = None
        self.events_seen = 0
        self.response_id: str | None = None
        """The response currently writing to the conversation."""
        self._response_item: dict[str, str] = {}  # response id -> its assistant message item
        self._speech_end: float | None = None  # local time the user stopped speaking (pending response)
        self._tg: asyncio.TaskGroup | None = None
        self._helpers: set[asyncio.Task[None]] = set()  # tool calls, barge-in reports: ended with the connection
        self.bargein = BargeInHandler(link, reply, record, self._spawn, self.send, mode=bargein_mode, clock=clock)
        self.closed = asyncio.Event()

    # shortcuts for tools and tests
    @property
    def transcript(self) -> TranscriptWriter:
        return self.record.transcript

    @property
    def console(self) -> Console:
        return self.record.console

    @property
    def metrics(self) -> Metrics:
        return self.record.metrics

    # ---- from the link and the microphone --------------------------------------------------------------

    def on_remote_audio(self, pcm48: np.ndarray) -> None:
        """A decoded 20 ms frame of model audio (WebRTC). Called on the event loop."""
        self.reply.on_media(pcm48)

    def on_mic_frame_sent(self, first_sample: float) -> None:
        """This connection's first microphone frame: its first sample's capture time is the origin of the
        server's input-audio timeline (``audio_start_ms`` / ``audio_end_ms`` count from it)."""
        if self.mic_t0 is None:
            self.mic_t0 = first_sample

    async def send(self, event: dict[str, Any]) -> None:
        """Send a client event (tools and handoffs use this). Once the link has closed the event is dropped
        (logged): the connection is ending, and its supervisor decides what comes next."""
        try:
            await self.link.send(event)
        except ConnectError as exc:
            log.info("not sent, the link has closed (%s): %s", exc, event.get("type"))

    async def interrupt(self) -> None:
        """Manual barge-in (push-to-talk key while the assistant speaks): the server is not cancelling."""
        await self.bargein.barge_in(None, manual=True, response_id=self.response_id, server_cancels=False)

    # ---- the event pump ----------------------------------------------------------------------------------

    async def pump_events(self) -> None:
        while True:
            raw = await self.link.recv()
            if raw is None:
                log.info("link closed: %s", (self.link.close_info() or CloseInfo(CloseReason.NETWORK)).line())
                self.closed.set()
                return
            self.events_seen += 1
            await self.handle(ev.parse(raw))

    async def handle(self, e: ev.Event) -> None:  # noqa: C901 - one flat dispatch
        if isinstance(e, ev.Other) and e.type in KNOWN_SHAPES:
            self.record.metrics.malformed += 1  # a type we act on, with fields missing or of the wrong type
            self.record.malformed.record(message=f"a {e.type} event with fields missing or of the wrong type")
            return
        if self.tools is not None:
            self.tools.on_event(e)
        for event in self.spoken.recovery(e):  # a reply that came back without audio: ask again, spoken
            await self.send(event)
        match e:
            case ev.SessionChanged(session=config):
                self._on_session(config)
            case ev.SpeechStarted(audio_start_ms=start_ms):
                self.user_speaking = True
                onset = None
                if self.mic_t0 is not None:  # audio_start_ms includes the prefix padding (PROTOCOL.md 4.4)
                    onset = self.mic_t0 + (start_ms + self.turns.prefix_padding_ms) / 1000
                await self.bargein.barge_in(
                    onset, manual=False, response_id=self.response_id, server_cancels=self.turns.interrupt_response
                )
            case ev.SpeechStopped(audio_end_ms=end_ms):
                self.user_speaking = False
                if self.mic_t0 is not None:
                    self._speech_end = self.mic_t0 + (end_ms - self.turns.silence_duration_ms) / 1000
            case ev.ItemAdded(item=item, previous_item_id=prev, done=done):
                self._on_item(item, prev, done)
            case ev.InputTranscript(item_id=item_id, text=text, final=final, failed=failed):
                conv = self.record.conv
                it = conv.get(item_id) or conv.add(item_id, "user", None)
                it.text = text if final else it.text + text
                if final:
                    it.final = True
                    if not failed:
                        self.record.console.line("you", text)
                self.record.flush()
            case ev.ResponseCreated(response_id=rid):
                self.response_id = rid
                self.reply.gate_closed = False
            case ev.OutputItemAdded(response_id=rid, item=item):
                if item.get("type") == "message" and item.get("role") == "assistant":
                    self.reply.started(item["id"])
                    self._response_item[rid] = item["id"]
            case ev.OutputAudioBuffer(what="stopped", response_id=rid):
                ended = self._response_item.get(rid or "")
                if ended is not None:  # paced media: the server has sent the last sample of this reply
                    self.reply.media_ended(ended)
            case ev.AudioDelta(item_id=item_id, content_index=index, delta=delta):
                self.reply.on_delta(item_id, index, delta)
            case ev.AssistantText(item_id=item_id, text=text, final=final):
                self._on_assistant_text(item_id, text, final)
            case ev.ResponseDone(response_id=rid):
                await self._on_response_done(rid)
            case ev.ItemTruncated(item_id=item_id, audio_end_ms=end_ms):
                self.bargein.truncated(item_id, end_ms)
            case ev.ServerError():
                self._on_error(e)
            case ev.FunctionCall():
                if self.tools is not None:
                    self._spawn(self.tools.on_function_call(e, self))
                else:
                    log.warning("the model called %s but no tools are configured", e.name)
            case ev.OutputAudioBuffer() | ev.Other():
                pass

    # ---- handlers ----------------------------------------------------------------------------------------

    def _on_session(self, config: dict[str, Any]) -> None:
        self.effective_config = config
        self.turns = TurnDetection.from_config(config)
        expires = config.get("expires_at")
        if isinstance(expires, int | float) and expires > 0:
            self.expires_at = float(expires)
        if self.session_id is None:
            self.session_id = str(config.get("id") or "")
            self.started.set()
            self.record.write(
                "session",
                session_id=config.get("id"),
                model=config.get("model"),
                transport=self.link.transport,
                call_id=self.link.call_id,
                **self.info,
            )

    def _on_item(self, item: dict[str, Any], prev: str | None, done: bool) -> None:
        if item.get("type") != "message" or item.get("role") not in ("user", "assistant"):
            return
        if str(item.get("id", "")).startswith(REPLAY_ID_PREFIX):
            return  # our own replay of the conversation into this session: already in the transcript
        it = self.record.conv.add(item["id"], item["role"], prev)
        if self.reply.arrived_before_announced(item["id"]):
            it.audio_pending = True  # its audio arrived before the item was announced
        if item["role"] == "user":
            content = item.get("content") or []
            texts = [c["text"] for c in content if c.get("type") == "input_text" and isinstance(c.get("text"), str)]
            if texts and not it.final:
                it.text, it.final = " ".join(t for t in texts if t), True
                self.record.console.line("you", it.text)
            elif done and not self.turns.transcription and not it.final:
                it.final = True  # no transcription configured: the turn is written with text null
                it.done_at = self.clock()
            elif done:
                it.done_at = self.clock()
        self.record.flush()

    def _on_assistant_text(self, item_id: str, text: str, final: bool) -> None:
        conv = self.record.conv
        it = conv.get(item_id) or conv.add(item_id, "assistant", None)
        if final:
            it.text = text or it.text
            it.final = True
            if item_id not in self.reply.interrupted:
                self.record.console.line("assistant", it.text)
            self.record.flush()
        else:
            it.text += text

    async def _on_response_done(self, rid: str) -> None:
        item_id = self._response_item.get(rid)
        if item_id is not None and self.link.traits.audio_in_events:
            # every delta has arrived. (Paced media: response.done comes long before the audio has been
            # streamed; output_audio_buffer.stopped marks the end there.)
            self.reply.all_arrived(item_id)
        if rid == self.response_id:
            self.response_id = None
        await self.bargein.response_done(rid)
        self.record.flush()

    def _on_error(self, e: ev.ServerError) -> None:
        self.record.metrics.errors += 1
        benign = e.code == "response_cancel_not_active"
        self.record.write("error", type=e.type, code=e.code, message=e.message)
        if not benign:
            self.record.console.error(f"{e.code or e.type}: {e.message}")
        reason = ENDING_ERRORS.get(e.code or "")
        if reason is not None:  # the server closes next: remember why (the first reason wins) and end the
            self.link.closed_because(CloseInfo(reason, f"{e.code}: {e.message}"))  # connection now
            self.closed.set()

    def at_turn_boundary(self) -> bool:
        """Nobody is talking and nothing is on its way: the user is silent, no reply is being generated,
        and none is queued or playing (a good moment to move to a new session)."""
        quiet = not self.user_speaking and self.response_id is None and not self._helpers  # no tool running
        return quiet and self.reply.all_played()

    # ---- latency and transcript ----------------------------------------------------------------------------

    def poll_first_audio(self) -> None:
        """Write ``response_ms`` once the sink has played the first sample of the pending reply."""
        item = self.reply.item
        if item is None or self._speech_end is None:
            return
        st = self.reply.playout.stats(item)
        if st is None or st.first_handed is None:
            return
        t = st.first_handed + self.reply.playout.output_latency
        if t < self._speech_end:
            return  # the previous reply (over WS it stays the current item once played): wait for this turn's
        ms = round((t - self._speech_end) * 1000, 1)
        self._speech_end = None
        self.record.metrics.response_ms.append(ms)
        self.record.write("latency", item_id=item, response_ms=ms)

    async def tick(self) -> None:
        """Housekeeping: response latency (from the sink's own timestamps), transcript hold-back release."""
        while True:
            self.poll_first_audio()
            self.reply.release_played()
            self.record.flush()
            await asyncio.sleep(until_grid(TICK_S))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a short helper task inside the runtime's TaskGroup (never fire-and-forget)."""
        if self._tg is None:
            coro.close()
            return
        task = self._tg.create_task(coro)
        self._helpers.add(task)
        task.add_done_callback(self._helpers.discard)

    async def run(self, *extra: Coroutine[Any, Any, None]) -> CloseInfo:
        """Pump events, the link's media and ``extra`` tasks until the link closes; cancel to stop.
        Returns why the link closed."""
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                tasks = [tg.create_task(self.pump_events(), name="events"), tg.create_task(self.tick(), name="tick")]
                tasks += [tg.create_task(self.link.run_media(), name="media")]
                tasks += [tg.create_task(c) for c in extra]
                await self.closed.wait()  # the link closed, or an error event said the session is over
                for task in [*tasks, *self._helpers]:
                    task.cancel()
        finally:
            self._tg = None
            self.finish()
        return self.link.close_info() or CloseInfo(CloseReason.NETWORK, "the connection closed")

    def finish(self) -> None:
        """Write everything still held back (the end of this connection)."""
        self.record.flush(force=True)
