"""One Realtime session, transport-agnostic (docs/architecture.md, "Emulator engine").

Transports (WS, WebRTC data channel, sideband WS) only move events and audio; everything the server
decides lives here: session config, conversation, input buffer + VAD, responses, errors.

Event delivery: server events go to every listener synchronously, in order. Events emitted while no
listener is attached (``session.created`` before a WebRTC data channel opens) are kept in a bounded
backlog and flushed to the first listener that takes it (``add_listener(fn, backlog=True)``, the
default); a sideband WS takes none (it gets its own ``session.created``) and sees only new events. So a
transport never has to trigger ``session.created`` itself: call :meth:`Engine.start` once, attach
whenever ready.

Closing: :meth:`Engine.wait_closed` returns ``(code, reason)`` when the session ends on the server side
(the 60-minute cap: ``session_expired`` then close 1001, PROTOCOL.md 6) or after :meth:`aclose`;
transports close their socket / peer with that code.

Audio: over WS (no ``AudioOut`` attached) replies stream as ``response.output_audio.delta``, generated
``config.speed`` times faster than real time. Over WebRTC the reply goes to ``AudioOut.write`` at the same
rate (the transport paces it) and no delta events are sent (PROTOCOL.md 2.3).
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from bridge.emulator.behaviours.base import Behaviour
from bridge.emulator.client_events import Transport, check_event, decode_frame, event_id_of
from bridge.emulator.config import EmulatorConfig
from bridge.emulator.conversation import Conversation
from bridge.emulator.engine_parts import (
    AudioOut,
    ClientError,
    ResponseState,
    obfuscation,
    transcription_deltas,
    transcription_usage,
)
from bridge.emulator.faults import Switches
from bridge.emulator.handlers import ClientEventHandlers
from bridge.emulator.idle import IdleTimer
from bridge.emulator.input_audio import InputAudio, Segment
from bridge.emulator.lifetime import Lifetime
from bridge.emulator.log import EventLog
from bridge.emulator.responses import ResponseGeneration
from bridge.protocol import ids
from bridge.protocol.pcm import BYTES_PER_MS

log = logging.getLogger(__name__)

Listener = Callable[[dict[str, Any]], None]
Handler = Callable[[dict[str, Any]], Awaitable[None]]

BACKLOG_MAX = 1000
MAX_APPEND_BYTES = 15 * 1024 * 1024  # PROTOCOL.md 3: at most 15 MiB per append


def _undecoded(data: str | bytes | bytearray | dict[str, Any]) -> dict[str, Any]:
    """What the log shows of a frame that never became an event."""
    if isinstance(data, bytes | bytearray):
        return {"binary": len(data)}
    return {"raw": str(data)[:200]}


class Engine(ResponseGeneration, ClientEventHandlers):
    """One Realtime session. Constructors do no I/O; call :meth:`start` from the event loop."""

    def __init__(
        self,
        config: EmulatorConfig,
        session: dict[str, Any],
        behaviour: Behaviour,
        *,
        transport: Transport = "ws",
        log_sink: EventLog | None = None,
        switches: Switches | None = None,
    ) -> None:
        self.config = config
        self.switches = switches or Switches()
        self.session = copy.deepcopy(session)
        self.behaviour = behaviour
        self.transport: Transport = transport
        self.id: str = self.session["id"]
        self.conversation_id = ids.conversation_id()
        self._log = log_sink
        self._listeners: list[Listener] = []
        self._backlog: deque[dict[str, Any]] = deque()
        self.backlog_dropped = 0
        self._had_listener = False
        self.conversation = Conversation()
        self._input = InputAudio()
        self._speech_item: str | None = None
        self._response: ResponseState | None = None  # the active default-conversation response
        self._last_response: ResponseState | None = None
        self._playing: ResponseState | None = None  # WebRTC: response whose audio is in the AudioOut
        self._responses = 0
        self._voice_locked = False
        self._audio_out: AudioOut | None = None
        self._echo: ResponseState | None = None
        self._echo_item: dict[str, Any] | None = None
        self._echo_index = 0
        self._echo_prev: str | None = None
        self._truncated: set[str] = set()  # assistant items whose transcript was dropped
        self._tasks: set[asyncio.Task[None]] = set()
        self._expiry: asyncio.TimerHandle | None = None
        self.lifetime = Lifetime()
        self.stalled_events_dropped = 0  # events the session "said" while stalled (never sent)
        self.call_id: str | None = None  # set by the WebRTC transport
        self.created_at = config.clock()
        self.sidebands = 0  # sideband WebSockets attached right now (?call_id=)
        self._started = False
        self._handlers: dict[str, Handler] = {
            "session.update": self._on_session_update,
            "input_audio_buffer.append": self._on_input_audio_buffer_append,
            "input_audio_buffer.commit": self._on_input_audio_buffer_commit,
            "input_audio_buffer.clear": self._on_input_audio_buffer_clear,
            "output_audio_buffer.clear": self._on_output_audio_buffer_clear,
            "conversation.item.create": self._on_conversation_item_create,
            "conversation.item.retrieve": self._on_conversation_item_retrieve,
            "conversation.item.truncate": self._on_conversation_item_truncate,
            "conversation.item.delete": self._on_conversation_item_delete,
            "response.create": self._on_response_create,
            "response.cancel": self._on_response_cancel,
            "session.close": self._on_session_close,
        }
        self._idle = IdleTimer(self._idle_timeout)
        self._configure_vad()

    # ------------------------------------------------------------------ transport API
    def start(self) -> None:
        """Emit ``session.created`` and arm the session's maximum-duration timer."""
        if self._started:
            return
        self._started = True
        now = self.config.clock()
        self.session["expires_at"] = int(now + self.config.session_max_seconds)
        loop = asyncio.get_running_loop()
        self._expiry = loop.call_later(self.config.session_max_seconds, self.expire)
        self._emit("session.created", session=copy.deepcopy(self.session))

    def add_listener(self, fn: Listener, *, backlog: bool = True) -> None:
        """``fn`` gets every server event from now on; the first listener with ``backlog`` also gets the
        events emitted before anyone listened (``session.created``). A sideband passes ``backlog=False``:
        it has its own ``session.created``, and the call's data channel must still get the original one."""
        self._listeners.append(fn)
        if backlog and not self._had_listener:
            self._had_listener = True
            while self._backlog:
                self._deliver_one(fn, self._backlog.popleft())

    def remove_listener(self, fn: Listener) -> None:
        if fn in self._listeners:
            self._listeners.remove(fn)

    def session_created_event(self) -> dict[str, Any]:
        """A fresh ``session.created`` for a late joiner (sideband WS), not broadcast to others."""
        event = {"type": "session.created", "event_id": ids.event_id(), "session": copy.deepcopy(self.session)}
        self._record("out", event)
        return event

    def attach_audio_out(self, out: AudioOut) -> None:
        self._audio_out = out
        self.transport = "webrtc"

    def heard_text(self, item_id: str) -> str | None:
        """What the "model" understood of a user audio item (whether or not transcription is on)."""
        return self.conversation.heard.get(item_id)

    @property
    def closed(self) -> bool:
        return self.lifetime.closed

    @property
    def close_code(self) -> int:
        return self.lifetime.code

    @property
    def close_reason(self) -> str:
        return self.lifetime.reason

    async def wait_closed(self) -> tuple[int, str]:
        return await self.lifetime.wait_closed()

    async def aclose(self) -> None:
        """Stop every response task and mark the session closed. Idempotent."""
        self._close(1000, "")
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._listeners.clear()

    # ------------------------------------------------------------------ WebRTC output callbacks
    def on_output_started(self, response_id: str) -> None:
        resp = self._find_response(response_id)
        if resp is None or resp.output_started or resp.cleared:
            return
        resp.output_started = True
        self._emit("output_audio_buffer.started", response_id=response_id)

    def on_output_stopped(self, response_id: str) -> None:
        resp = self._find_response(response_id)
        if resp is None or resp.output_stopped:
            return
        resp.output_stopped = True
        if self._playing is resp:
            self._playing = None
        if resp.done and not resp.cleared:
            self._emit("output_audio_buffer.stopped", response_id=response_id)
            self.on_reply_played()

    # ------------------------------------------------------------------ client events
    async def handle_client_event(self, data: str | bytes | dict[str, Any], *, via: str | None = None) -> None:
        """One client event from any transport. Errors are ``error`` events, never exceptions."""
        if self.lifetime.closed or self.lifetime.stalled:
            return
        event: Any = None
        try:
            event = decode_frame(data)
            self._record("in", event, via)
            event = check_event(event, self.transport)
            await self._handlers[event["type"]](event)
        except ClientError as err:
            if event is None:
                self._record("in", _undecoded(data), via)
            self._error(err.code, err.message, err.param, event_id_of(event))

    # ------------------------------------------------------------------ input audio
    def feed_input_audio(self, pcm24: bytes) -> None:
        """User audio, PCM16 24 kHz mono (WS: decoded appends; WebRTC: decoded, downmixed, resampled)."""
        if self.lifetime.closed or self.lifetime.stalled or not pcm24:
            return
        echo = self.behaviour.echoes_input
        if echo and self._audio_out is None:
            self._echo_audio(pcm24)
        td = self.session["audio"]["input"]["turn_detection"] or {}
        for ev in self._input.feed(pcm24):
            if isinstance(ev, Segment):
                self._on_speech_stopped(ev, td, echo)
                continue
            self._speech_item = ids.item_id()
            self._idle.disarm()
            self._emit("input_audio_buffer.speech_started", audio_start_ms=ev.audio_start_ms, item_id=self._speech_item)
            if td.get("interrupt_response", True) and not echo:
                self._barge_in()

    def _on_speech_stopped(self, turn: Segment, td: dict[str, Any], echo: bool) -> None:
        item_id = self._speech_item or ids.item_id()
        self._speech_item = None
        self._emit("input_audio_buffer.speech_stopped", audio_end_ms=turn.end_ms, item_id=item_id)
        self._commit_user_audio(turn.pcm, item_id)
        if self._echo is not None:
            self._finish_echo()
        elif td.get("create_response", True) and self._response is None and self.session["type"] == "realtime":
            # echo over WebRTC: the transport already sent the audio back; no reply of its own
            if not (echo and self._audio_out is not None):
                self._start_response({}, True)

    def _configure_vad(self) -> None:
        self._input.configure(self.session["audio"]["input"]["turn_detection"])

    def _commit_user_audio(self, pcm: bytes, item_id: str) -> None:
        previous = self.conversation.last_id()
        self._emit("input_audio_buffer.committed", previous_item_id=previous, item_id=item_id)
        item: dict[str, Any] = {
            "id": item_id,
            "type": "message",
            "object": "realtime.item",
            "status": "completed",
            "role": "user",
            "content": [{"type": "input_audio", "transcript": None}],
        }
        self.conversation.insert(item)
        self.conversation.audio[item_id] = pcm
        self.conversation.heard[item_id] = self.behaviour.transcribe(pcm, self._responses)
        self._emit("conversation.item.added", previous_item_id=previous, item=copy.deepcopy(item))
        self._emit("conversation.item.done", previous_item_id=previous, item=copy.deepcopy(item))
        transcription = self.session["audio"]["input"].get("transcription")
        if transcription is not None:
            text = self.conversation.heard[item_id]
            item["content"][0]["transcript"] = text
            for piece in transcription_deltas(transcription.get("model"), text):
                self._emit(
                    "conversation.item.input_audio_transcription.delta",
                    item_id=item_id,
                    content_index=0,
                    delta=piece,
                    obfuscation=obfuscation(piece),
                )
            self._emit(
                "conversation.item.input_audio_transcription.completed",
                item_id=item_id,
                content_index=0,
                transcript=text,
                usage=transcription_usage(transcription.get("model"), text, len(pcm)),
            )

    # ------------------------------------------------------------------ idle timeout (PROTOCOL.md 4.7)
    def _arm_idle(self, delay_s: float = 0.0) -> None:
        td = self.session["audio"]["input"]["turn_detection"]
        timeout = td.get("idle_timeout_ms") if td is not None and td.get("type") == "server_vad" else None
        self._idle.arm(timeout, self._input.position_ms, delay_s)

    def _idle_timeout(self, start_ms: int) -> None:
        if self.lifetime.closed or self._response is not None or self._input.speaking:
            return
        td = self.session["audio"]["input"]["turn_detection"] or {}
        end_ms = max(self._input.position_ms, start_ms + int(td.get("idle_timeout_ms") or 0))
        item_id = ids.item_id()
        self._emit(
            "input_audio_buffer.timeout_triggered", audio_start_ms=start_ms, audio_end_ms=end_ms, item_id=item_id
        )
        self._commit_user_audio(self._input.take_until(end_ms), item_id)
        if td.get("create_response", True) and self.session["type"] == "realtime":
            self._start_response({}, True)

    def on_reply_played(self, delay_s: float = 0.0) -> None:
        """The last reply has finished playing (or will in ``delay_s``): the idle timer starts."""
        if self._response is None and not self._input.speaking:
            self._arm_idle(delay_s)

    # ------------------------------------------------------------------ barge-in and truncation
    def _barge_in(self) -> None:
        playing = self._playing
        if playing is not None and not playing.cleared:
            self._interrupt_playback(playing)
        if self._response is not None:
            self._cancel(self._response, "turn_detected")

    def _interrupt_playback(self, resp: ResponseState) -> None:
        """WebRTC: stop the wire now, ``output_audio_buffer.cleared`` + automatic truncation (PROTOCOL.md 2.3)."""
        assert self._audio_out is not None
        sent_ms = int(self._audio_out.interrupt())
        resp.cleared = True
        self._playing = None
        self._emit("output_audio_buffer.cleared", response_id=resp.id)
        if resp.audio_item is not None and resp.audio_item in self.conversation:
            have = len(self.conversation.audio.get(resp.audio_item, b"")) / BYTES_PER_MS
            self._truncate_item(resp.audio_item, max(0, min(sent_ms, int(have))))

    def _truncate_item(self, item_id: str, end_ms: int) -> None:
        self._truncated.add(item_id)
        pcm = self.conversation.audio.get(item_id, b"")
        self.conversation.audio[item_id] = pcm[: end_ms * BYTES_PER_MS]
        item = self.conversation.get(item_id)
        if item is not None:
            for part in item["content"]:
                if part.get("type") == "output_audio":
                    part["transcript"] = ""  # the server drops the unheard transcript (PROTOCOL.md 4.5)
        self._emit("conversation.item.truncated", item_id=item_id, content_index=0, audio_end_ms=end_ms)

    def _cancel(self, resp: ResponseState, reason: str) -> None:
        if resp.cancel_reason is None:
            resp.cancel_reason = reason
        resp.cancelled.set()

    # ------------------------------------------------------------------ emission
    def _emit(self, etype: str, **fields: Any) -> None:
        if self.lifetime.stalled:
            self.stalled_events_dropped += 1
            return
        event = {"type": etype, "event_id": ids.event_id(), **fields}
        self._record("out", event)
        if not self._had_listener:
            if len(self._backlog) >= BACKLOG_MAX:
                self._backlog.popleft()
                self.backlog_dropped += 1
            self._backlog.append(event)
            return
        for fn in list(self._listeners):
            self._deliver_one(fn, event)

    def _deliver_one(self, fn: Listener, event: dict[str, Any]) -> None:
        try:
            fn(event)
        except Exception:  # a broken transport must not take the session down with it
            log.exception("session %s: listener failed on %s", self.id, event.get("type"))

    def _error(self, code: str | None, message: str, param: str | None = None, event_id: str | None = None) -> None:
        self._emit(
            "error",
            error={
                "type": "invalid_request_error",
                "code": code,
                "message": message,
                "param": param,
                "event_id": event_id,
            },
        )

    def _record(self, direction: Literal["in", "out"], event: Any, via: str | None = None) -> None:
        if self._log is not None:
            self._log.record(direction, via or self.transport, self.id, event)

    # ------------------------------------------------------------------ lifetime and faults
    def expire(self) -> None:
        """The maximum session length is reached: ``session_expired``, then close 1001 (PROTOCOL.md 6)."""
        minutes = self.config.session_max_seconds / 60
        shown = f"{minutes:g}" if minutes >= 1 else f"{minutes:.3g}"
        message = f"Your session hit the maximum duration of {shown} minutes."
        self.inject_error("session_expired", message)
        for resp in (self._response, self._echo):
            if resp is not None:
                self._cancel(resp, "client_cancelled")
        self._close(1001, message)

    def inject_error(self, code: str | None, message: str, etype: str = "invalid_request_error") -> None:
        """An ``error`` event the client did not cause (a fault); the session goes on unless closed after."""
        self._emit("error", error={"type": etype, "code": code, "message": message, "param": None, "event_id": None})

    def close(self, code: int, reason: str) -> None:
        """End the session with a goodbye: transports flush, then close with ``code`` (see lifetime.py)."""
        self._close(code, reason)

    def drop(self) -> None:
        """End the session with no goodbye: the transport resets the connection (see lifetime.py)."""
        self._close(1006, "dropped", abrupt=True)

    def stall(self) -> None:
        """Go silent without closing (see lifetime.py)."""
        self.lifetime.stall()

    def _close(self, code: int, reason: str, *, abrupt: bool = False) -> None:
        if self.lifetime.end(code, reason, abrupt=abrupt) and self._expiry is not None:
            self._expiry.cancel()
