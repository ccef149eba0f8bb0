"""The handlers of the 11 (+2) client events, mixed into :class:`~bridge.emulator.engine.Engine`.

Each gets an event already checked against the official schema (``client_events.check_event``), so only
the rules the schema cannot say are here (PROTOCOL.md 4.2-4.6); a mistake raises :class:`ClientError`,
which the engine turns into one ``error`` event. The engine's dispatch table maps each type to one of these.
"""

from __future__ import annotations

import binascii
import copy
from collections.abc import Callable
from typing import Any

from bridge.emulator import validation
from bridge.emulator.conversation import Conversation
from bridge.emulator.engine_parts import ClientError, ResponseState, normalise_item
from bridge.emulator.input_audio import MIN_COMMIT_MS, InputAudio
from bridge.emulator.session_config import SessionError, merge_session
from bridge.protocol import ids
from bridge.protocol.pcm import BYTES_PER_MS, b64decode

MAX_APPEND_BYTES = 15 * 1024 * 1024  # PROTOCOL.md 3: at most 15 MiB per append


class ClientEventHandlers:
    """Mixed into Engine; works on the engine's state (declared here for readers and the type checker)."""

    session: dict[str, Any]
    conversation: Conversation
    _input: InputAudio
    _speech_item: str | None
    _response: ResponseState | None
    _last_response: ResponseState | None
    _playing: ResponseState | None
    _echo: ResponseState | None
    _voice_locked: bool
    _emit: Callable[..., None]
    _configure_vad: Callable[[], None]
    _arm_idle: Callable[..., None]
    close: Callable[[int, str], None]
    feed_input_audio: Callable[[bytes], None]
    _commit_user_audio: Callable[[bytes, str], None]
    _finish_echo: Callable[[], None]
    _interrupt_playback: Callable[[ResponseState], None]
    _truncate_item: Callable[[str, int], None]
    _start_response: Callable[[dict[str, Any], bool], None]
    _cancel: Callable[[ResponseState, str], None]

    async def _on_session_update(self, event: dict[str, Any]) -> None:
        try:
            self.session = merge_session(self.session, event["session"], voice_locked=self._voice_locked)
        except SessionError as err:
            raise ClientError(err.code, err.message, err.param) from None
        self._configure_vad()
        self._emit("session.updated", session=copy.deepcopy(self.session))
        if self._response is None and not self._input.speaking:
            self._arm_idle()

    async def _on_session_close(self, event: dict[str, Any]) -> None:
        self.close(1000, "")

    async def _on_input_audio_buffer_append(self, event: dict[str, Any]) -> None:
        try:
            pcm = b64decode(event["audio"])
        except (binascii.Error, ValueError):
            pcm = b""
        if not pcm:  # the real wording for audio it cannot use; for an empty string UNCONFIRMED
            raise ClientError("invalid_value", f"Invalid 'audio'. Expected base64-encoded audio bytes ({self._fmt()}).",
                              "audio")  # fmt: skip
        if len(pcm) > MAX_APPEND_BYTES:
            raise ClientError("invalid_value", "Audio chunk too large: at most 15 MiB per append.", "audio")
        self.feed_input_audio(pcm)

    def _fmt(self) -> str:
        kind = self.session["audio"]["input"]["format"].get("type")
        return {"audio/pcmu": "G.711 mu-law at 8kHz", "audio/pcma": "G.711 A-law at 8kHz"}.get(
            kind, "mono PCM16 at 24kHz"
        )

    async def _on_input_audio_buffer_commit(self, event: dict[str, Any]) -> None:
        ms = self._input.buffered_ms
        if ms < MIN_COMMIT_MS:
            raise ClientError(
                "input_audio_buffer_commit_empty",
                "Error committing input audio buffer: buffer too small. Expected at least 100ms of audio, "
                f"but buffer only has {ms:.2f}ms of audio.",
            )
        pcm = self._input.take_all()
        item_id, self._speech_item = self._speech_item or ids.item_id(), None
        self._commit_user_audio(pcm, item_id)
        if self._echo is not None:
            self._finish_echo()

    async def _on_input_audio_buffer_clear(self, event: dict[str, Any]) -> None:
        self._input.clear()
        self._speech_item = None
        self._emit("input_audio_buffer.cleared")

    async def _on_output_audio_buffer_clear(self, event: dict[str, Any]) -> None:
        resp = self._playing
        if resp is not None:
            self._interrupt_playback(resp)
        else:
            last = self._last_response.id if self._last_response else ids.response_id()
            self._emit("output_audio_buffer.cleared", response_id=last)

    async def _on_conversation_item_create(self, event: dict[str, Any]) -> None:
        item = event.get("item")
        if not isinstance(item, dict):
            raise ClientError("missing_required_parameter", "Missing required parameter: 'item'.", "item")
        prev = event.get("previous_item_id")
        if prev is not None and prev != "root" and prev not in self.conversation:
            raise ClientError("invalid_value", f"Previous item with id '{prev}' not found.", "previous_item_id")
        item, audio = normalise_item(item)
        if item["id"] in self.conversation:
            raise ClientError("invalid_value", f"Item with id '{item['id']}' already exists.", "item.id")
        previous = self.conversation.insert(
            item, after=prev if prev not in (None, "root") else None, first=prev == "root"
        )
        if audio is not None:
            self.conversation.audio[item["id"]] = audio
        if item.get("role") == "assistant":
            self.conversation.seeded_assistant_text.add(item["id"])  # the text-only trap (faults.py)
        self._emit("conversation.item.added", previous_item_id=previous, item=copy.deepcopy(item))
        self._emit("conversation.item.done", previous_item_id=previous, item=copy.deepcopy(item))

    async def _on_conversation_item_retrieve(self, event: dict[str, Any]) -> None:
        item = self.conversation.with_audio(self._item_id(event))
        assert item is not None
        self._emit("conversation.item.retrieved", item=item)

    async def _on_conversation_item_delete(self, event: dict[str, Any]) -> None:
        item_id = self._item_id(event)
        self.conversation.delete(item_id)
        self._emit("conversation.item.deleted", item_id=item_id)

    async def _on_conversation_item_truncate(self, event: dict[str, Any]) -> None:
        item_id = self._item_id(event)
        item = self.conversation.get(item_id)
        assert item is not None
        # Only model audio can be cut: an assistant item with audio generated so far (still in progress or
        # done). Anything else, e.g. a reply interrupted before its first audio, gets the real service's
        # answer (livekit/agents PR #6158: unsupported_content_type).
        if item.get("role") != "assistant" or not self.conversation.audio.get(item_id):
            raise ClientError(
                "unsupported_content_type", "Only model output audio messages can be truncated", "item_id"
            )
        if event["content_index"] != 0:
            raise validation.invalid_value("content_index", event["content_index"], [0])
        end_ms = event["audio_end_ms"]
        validation.validate({"type": "integer", "minimum": 0}, end_ms, "audio_end_ms")
        have_ms = len(self.conversation.audio.get(item_id, b"")) / BYTES_PER_MS
        if end_ms > have_ms:
            # Message wording as reported from the real service by third-party client code (UNCONFIRMED
            # code: invalid_value, the generic code for an out-of-range field).
            raise ClientError(
                "invalid_value", f"Audio content of {int(have_ms)}ms is already shorter than {end_ms}ms", "audio_end_ms"
            )
        self._truncate_item(item_id, end_ms)

    async def _on_response_create(self, event: dict[str, Any]) -> None:
        params = event.get("response") or {}
        if self.session["type"] == "transcription":  # UNCONFIRMED wording: transcription sessions never respond
            raise ClientError("invalid_value", "Responses are not supported in transcription sessions.", "type")
        in_conversation = params.get("conversation", "auto") != "none"
        if in_conversation and self._response is not None:
            raise ClientError(
                "conversation_already_has_active_response",
                f"Conversation already has an active response in progress: {self._response.id}. "
                "Wait until the response is finished before creating a new one.",
            )
        mods = params.get("output_modalities")
        if mods is not None and len(set(mods)) != 1:
            message = "output_modalities must be ['audio'] or ['text'], not both."
            raise ClientError("invalid_value", message, "response.output_modalities")
        self._start_response(params, in_conversation)

    async def _on_response_cancel(self, event: dict[str, Any]) -> None:
        resp = self._response
        wanted = event.get("response_id")
        if resp is None or (wanted is not None and wanted != resp.id):
            raise ClientError("response_cancel_not_active", "Cancellation failed: no active response found")
        self._cancel(resp, "client_cancelled")

    def _item_id(self, event: dict[str, Any]) -> str:
        item_id = event.get("item_id")
        if not isinstance(item_id, str):
            raise ClientError("missing_required_parameter", "Missing required parameter: 'item_id'.", "item_id")
        if item_id not in self.conversation:
            # Code UNCONFIRMED for the real service; invalid_value is its generic "bad field value" code.
            raise ClientError("invalid_value", f"Item with item_id '{item_id}' not found.", "item_id")
        return item_id
