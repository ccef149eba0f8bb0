"""Response generation of the emulator's :class:`~bridge.emulator.engine.Engine`: the GA event sequence of
a reply (PROTOCOL.md 4.4 / 7), its audio (WS deltas faster than real time, or the WebRTC ``AudioOut``),
function calls, cancellation, and the WS ``echo`` loop.

A mixin so ``engine.py`` stays readable: it works on the engine's own state (``session``, ``conversation``,
``_emit``, ...) and is never used on its own.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import math
import time
from typing import Any

from bridge.emulator.behaviours.base import Behaviour, FunctionCall, Reply, Turn
from bridge.emulator.config import EmulatorConfig
from bridge.emulator.conversation import Conversation
from bridge.emulator.engine_parts import (
    AudioOut,
    ResponseState,
    obfuscation,
    response_usage,
    split_words,
)
from bridge.emulator.faults import Switches
from bridge.emulator.idle import IdleTimer
from bridge.protocol import ids
from bridge.protocol.pcm import BYTES_PER_MS, b64encode

log = logging.getLogger(__name__)


class ResponseGeneration:
    """Mixed into :class:`bridge.emulator.engine.Engine`."""

    # state owned by Engine (declared for readers and the type checker)
    session: dict[str, Any]
    config: EmulatorConfig
    behaviour: Behaviour
    conversation: Conversation
    conversation_id: str
    switches: Switches
    _response: ResponseState | None  # the active default-conversation response
    _last_response: ResponseState | None
    _playing: ResponseState | None  # WebRTC: response whose audio is in the AudioOut
    _echo: ResponseState | None
    _echo_item: dict[str, Any] | None
    _echo_index: int
    _echo_prev: str | None
    _responses: int
    _voice_locked: bool
    _audio_out: AudioOut | None
    _truncated: set[str]
    _tasks: set[asyncio.Task[None]]
    _idle: IdleTimer

    def _emit(self, etype: str, **fields: Any) -> None:
        raise NotImplementedError  # Engine._emit

    def on_reply_played(self, delay_s: float = 0.0) -> None:
        raise NotImplementedError  # Engine.on_reply_played

    # ------------------------------------------------------------------ responses
    def _start_response(self, params: dict[str, Any], in_conversation: bool) -> None:
        out_cfg = self.session["audio"]["output"]
        modalities = list(params.get("output_modalities") or self.session["output_modalities"])
        if self.switches.text_only and "output_modalities" not in params and self.conversation.seeded_assistant_text:
            modalities = ["text"]  # the opt-in trap: seeded with assistant text, it answers in text (faults.py)
        resp = ResponseState(
            id=ids.response_id(),
            conversation=in_conversation,
            modalities=modalities,
            metadata=params.get("metadata"),
            voice=(params.get("audio") or {}).get("output", {}).get("voice", out_cfg["voice"]),
            fmt=out_cfg["format"],
            max_output_tokens=params.get("max_output_tokens", self.session["max_output_tokens"]),
        )
        if in_conversation:
            self._response = resp
            self._idle.disarm()
        self._last_response = resp
        self._emit("response.created", response=self._response_object(resp, "in_progress", None, None))
        turn = self._turn()
        self._responses += 1
        task = asyncio.get_running_loop().create_task(self._run_response(resp, turn), name=f"response {resp.id}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("response task failed", exc_info=task.exception())

    def _turn(self) -> Turn:
        user_text, audio_ms, last_type = None, 0.0, None
        items = self.conversation.items()
        if items:
            last_type = items[-1].get("type")
        for item in reversed(items):
            if item.get("role") == "user":
                for part in item.get("content", []):
                    if part.get("type") == "input_text":
                        user_text = part.get("text")
                    elif part.get("type") == "input_audio":
                        user_text = part.get("transcript")
                        audio_ms = len(self.conversation.audio.get(item["id"], b"")) / BYTES_PER_MS
                break
        return Turn(self._responses, user_text, audio_ms, last_type, self.conversation.as_heard())

    async def _sleep(self, resp: ResponseState, seconds: float) -> bool:
        """Wait ``seconds`` unless the response is cancelled first; True if cancelled."""
        if resp.cancelled.is_set():
            return True
        if seconds <= 0:
            await asyncio.sleep(0)
            return resp.cancelled.is_set()
        try:
            async with asyncio.timeout(seconds):
                await resp.cancelled.wait()
        except TimeoutError:
            return False
        return True

    async def _run_response(self, resp: ResponseState, turn: Turn) -> None:
        reply = await self.behaviour.reply(turn)
        think = reply.think_ms if reply.think_ms is not None else self.config.think_ms
        if await self._sleep(resp, think / 1000):
            self._finish(resp)
            return
        if reply.error is not None:
            err = reply.error
            self._emit(
                "error",
                error={
                    "type": err.type,
                    "code": err.code,
                    "message": err.message,
                    "param": err.param,
                    "event_id": None,
                },
            )
            self._finish(resp, failed={"type": err.type, "code": err.code})
            return
        if reply.text or reply.audio:
            await self._message(resp, reply)
        for call in reply.function_calls:
            if resp.cancelled.is_set():
                break
            await self._function_call(resp, call)
        self._finish(resp)

    def _open_item(self, resp: ResponseState, item: dict[str, Any]) -> tuple[int, str | None]:
        output_index = len(resp.output)
        resp.output.append(item)
        self._emit(
            "response.output_item.added", response_id=resp.id, output_index=output_index, item=copy.deepcopy(item)
        )
        previous = None
        if resp.conversation:
            previous = self.conversation.insert(copy.deepcopy(item))
            self._emit("conversation.item.added", previous_item_id=previous, item=copy.deepcopy(item))
        return output_index, previous

    def _close_item(self, resp: ResponseState, output_index: int, item: dict[str, Any], previous: str | None) -> None:
        resp.output[output_index] = copy.deepcopy(item)
        if resp.conversation:
            self.conversation.replace(copy.deepcopy(item))
            self._emit("conversation.item.done", previous_item_id=previous, item=copy.deepcopy(item))
        self._emit(
            "response.output_item.done", response_id=resp.id, output_index=output_index, item=copy.deepcopy(item)
        )

    def _open_message(self, resp: ResponseState) -> tuple[dict[str, Any], int, str | None]:
        item = {
            "id": ids.item_id(),
            "type": "message",
            "object": "realtime.item",
            "status": "in_progress",
            "role": "assistant",
            "content": [],
        }
        output_index, previous = self._open_item(resp, item)
        audio = "audio" in resp.modalities
        part = {"type": "audio", "transcript": ""} if audio else {"type": "text", "text": ""}
        self._emit(
            "response.content_part.added",
            response_id=resp.id,
            item_id=item["id"],
            output_index=output_index,
            content_index=0,
            part=part,
        )
        return item, output_index, previous

    def _message_chunk(
        self, resp: ResponseState, item: dict[str, Any], output_index: int, text: str, pcm: bytes
    ) -> None:
        ids_ = {"response_id": resp.id, "item_id": item["id"], "output_index": output_index, "content_index": 0}
        audio = "audio" in resp.modalities
        if text and audio:
            resp.text_chars += len(text)
            self._emit("response.output_audio_transcript.delta", **ids_, delta=text)
        elif text:  # text replies stream word by word, each with its obfuscation padding ([PROBE 8])
            resp.text_chars += len(text)
            for word in split_words(text):
                self._emit("response.output_text.delta", **ids_, delta=word, obfuscation=obfuscation(word))
        if pcm and audio:
            if resp.first_audio_at is None:
                resp.first_audio_at = time.monotonic()
            resp.audio_bytes += len(pcm)
            self.conversation.audio[item["id"]] = self.conversation.audio.get(item["id"], b"") + pcm
            self._voice_locked = True
            if self._audio_out is None:
                self._emit("response.output_audio.delta", **ids_, delta=b64encode(pcm))
            elif not resp.cleared:
                if not resp.audio_begun:
                    resp.audio_begun = True
                    resp.audio_item = item["id"]
                    self._playing = resp
                    self._audio_out.begin(resp.id, item["id"])
                self._audio_out.write(pcm)

    def _close_message(
        self,
        resp: ResponseState,
        item: dict[str, Any],
        output_index: int,
        previous: str | None,
        text: str,
        complete: bool,
    ) -> None:
        ids_ = {"response_id": resp.id, "item_id": item["id"], "output_index": output_index, "content_index": 0}
        if item["id"] in self._truncated:
            text = ""
        if resp.audio_begun and self._audio_out is not None and not resp.cleared:
            self._audio_out.end()
        if "audio" in resp.modalities:
            self._emit("response.output_audio.done", **ids_)
            self._emit("response.output_audio_transcript.done", **ids_, transcript=text)
            part: dict[str, Any] = {"type": "audio", "transcript": text}
            content = [{"type": "output_audio", "transcript": text}]
        else:
            self._emit("response.output_text.done", **ids_, text=text)
            part = {"type": "text", "text": text}
            content = [{"type": "output_text", "text": text}]
        self._emit("response.content_part.done", **ids_, part=part)
        final = {**item, "status": "completed" if complete else "incomplete", "content": content}
        self._close_item(resp, output_index, final, previous)

    async def _message(self, resp: ResponseState, reply: Reply) -> None:
        item, output_index, previous = self._open_message(resp)
        chunk = max(BYTES_PER_MS * 10, self.config.chunk_ms * BYTES_PER_MS)
        audio = reply.audio if "audio" in resp.modalities else b""
        n_chunks = max(1, math.ceil(len(audio) / chunk))
        words = split_words(reply.text)
        # The transcript runs ahead of the audio, as with the real model: all words within the first 60 %.
        lead = max(1, int(n_chunks * 0.6))
        per_chunk: list[list[str]] = [[] for _ in range(n_chunks)]
        for i, word in enumerate(words):
            per_chunk[min(n_chunks - 1, i * lead // max(1, len(words)))].append(word)
        spoken: list[str] = []
        pace = (self.config.chunk_ms / 1000) / max(self.config.speed, 1e-3)
        cancelled = False
        for n in range(n_chunks):
            text = "".join(per_chunk[n])
            spoken.append(text)
            self._message_chunk(resp, item, output_index, text, audio[n * chunk : (n + 1) * chunk])
            if audio and n < n_chunks - 1 and await self._sleep(resp, pace):
                cancelled = True
                break
        transcript = reply.text if not cancelled else "".join(spoken)
        self._close_message(resp, item, output_index, previous, transcript, complete=not cancelled)

    async def _function_call(self, resp: ResponseState, call: FunctionCall) -> None:
        call_id = call.call_id or ids.call_id()
        item = {
            "id": ids.item_id(),
            "type": "function_call",
            "object": "realtime.item",
            "status": "in_progress",
            "call_id": call_id,
            "name": call.name,
            "arguments": "",
        }
        output_index, previous = self._open_item(resp, item)
        ids_ = {"response_id": resp.id, "item_id": item["id"], "output_index": output_index, "call_id": call_id}
        half = len(call.arguments) // 2
        for piece in (call.arguments[:half], call.arguments[half:]):
            if piece:
                self._emit("response.function_call_arguments.delta", **ids_, delta=piece)
        self._emit("response.function_call_arguments.done", **ids_, name=call.name, arguments=call.arguments)
        self._close_item(resp, output_index, {**item, "status": "completed", "arguments": call.arguments}, previous)
        await asyncio.sleep(0)

    def _finish(self, resp: ResponseState, failed: dict[str, Any] | None = None) -> None:
        if resp.done:
            return
        resp.done = True
        if failed is not None:
            status, details = "failed", {"type": "failed", "error": failed}
        elif resp.cancel_reason is not None:
            status, details = "cancelled", {"type": "cancelled", "reason": resp.cancel_reason}
        else:
            status, details = "completed", None
        if self._response is resp:
            self._response = None
        usage = response_usage(resp)
        self._emit("response.done", response=self._response_object(resp, status, details, usage))
        self._emit(
            "rate_limits.updated",
            rate_limits=[
                {
                    "name": "tokens",
                    "limit": 15_000_000,
                    "remaining": 15_000_000 - usage["total_tokens"],
                    "reset_seconds": 0.001,
                }
            ],
        )
        if resp.audio_begun and resp.output_stopped and not resp.cleared:
            self._emit("output_audio_buffer.stopped", response_id=resp.id)
        if resp.conversation and (self._audio_out is None or not resp.audio_begun or resp.output_stopped):
            # WS: the client plays the audio in real time from its first delta; WebRTC: on_output_stopped
            played_until = (resp.first_audio_at or 0.0) + resp.audio_bytes / BYTES_PER_MS / 1000
            self.on_reply_played(played_until - time.monotonic() if self._audio_out is None else 0.0)

    def _response_object(self, resp: ResponseState, status: str, details: Any, usage: Any) -> dict[str, Any]:
        obj = resp.as_object(status, details, usage)
        obj["conversation_id"] = self.conversation_id if resp.conversation else None
        return obj

    def _find_response(self, response_id: str) -> ResponseState | None:
        for resp in (self._playing, self._response, self._last_response):
            if resp is not None and resp.id == response_id:
                return resp
        return None

    # ------------------------------------------------------------------ echo (WS)
    def _echo_audio(self, pcm: bytes) -> None:
        """``echo`` over WS: each append comes straight back as an output delta of one open response."""
        if self._echo is None:
            if self._response is not None:
                return
            out_cfg = self.session["audio"]["output"]
            resp = ResponseState(ids.response_id(), True, ["audio"], None, out_cfg["voice"], out_cfg["format"], "inf")
            self._echo = self._response = self._last_response = resp
            self._emit("response.created", response=self._response_object(resp, "in_progress", None, None))
            self._echo_item, self._echo_index, self._echo_prev = self._open_message(resp)
        assert self._echo_item is not None
        self._message_chunk(self._echo, self._echo_item, self._echo_index, "", pcm)

    def _finish_echo(self) -> None:
        resp, item = self._echo, self._echo_item
        assert resp is not None and item is not None
        self._echo, self._echo_item = None, None
        self._close_message(resp, item, self._echo_index, self._echo_prev, "", complete=True)
        self._finish(resp)
