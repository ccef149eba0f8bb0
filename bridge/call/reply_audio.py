"""The model's reply audio on one connection: which item it belongs to, how much arrived, what to drop.

WebRTC audio arrives as paced media frames with no item id: it belongs to the assistant item announced
last (``response.output_item.added``) until the server says the item's audio is over
(``output_audio_buffer.stopped``); frames before any announcement go under ``UNKNOWN_ITEM``. WebSocket
audio arrives as ``response.output_audio.delta`` events that name their item. Either way the frames go to
the station's playout, tagged with the item, and the arrived milliseconds are counted per item, which is
what a barge-in needs to know (what was received vs what was played).

After a barge-in, audio of the interrupted item is dropped (counted in the call's metrics); over WebRTC
the *gate* also drops untagged frames until the next response starts, since the server's own flush has
not reached us yet.
"""

from __future__ import annotations

import binascii
import logging
from typing import Protocol

import numpy as np

from bridge.call.record import CallRecord
from bridge.media.playout import FlushResult, ItemStats
from bridge.protocol import pcm

log = logging.getLogger(__name__)

UNKNOWN_ITEM = "?"  # WebRTC audio that arrives before its item is announced


class Playout(Protocol):
    """What a connection needs from :class:`bridge.media.playout.PlayoutBuffer`."""

    output_latency: float

    def push(self, pcm48: np.ndarray, item_id: str, content_index: int = 0) -> int: ...
    def flush(self, fade_ms: float = ..., *, discard: bool = True) -> FlushResult: ...
    def end_item(self, item_id: str, content_index: int = 0) -> None: ...
    def ungate(self, item_id: str) -> None: ...
    def played_ms(self, item_id: str, content_index: int = 0, now: float | None = None) -> float: ...
    def handed_ms(self, item_id: str, content_index: int = 0) -> float: ...
    def stats(self, item_id: str, content_index: int = 0) -> ItemStats | None: ...
    @property
    def queued_ms(self) -> float: ...


class ReplyAudio:
    """One connection's reply audio (see module docstring)."""

    def __init__(self, playout: Playout, record: CallRecord) -> None:
        self.playout = playout
        self._record = record
        self.item: str | None = None
        """The assistant item whose audio is arriving now."""
        self.gate_closed = False
        self.received_ms: dict[str, float] = {}
        self.done: set[str] = set()
        """Items all of whose audio has arrived."""
        self.interrupted: set[str] = set()
        self.live = False
        """This connection's audio plays (it is the call's current connection: :meth:`Connection.go_live`)."""

    # ---- audio in ----------------------------------------------------------------------------------------

    def on_media(self, pcm48: np.ndarray) -> None:
        """A decoded 20 ms frame of WebRTC reply audio (event loop); dropped until the connection is the
        call's current one (a new session's stream of silence while the old one still plays)."""
        if not self.live:
            return
        if self.gate_closed:
            self._record.metrics.dropped_late_audio_ms += len(pcm48) / 48
            return
        item = self.item or UNKNOWN_ITEM
        self._arrived(item, len(pcm48) / 48)
        self.playout.push(pcm48, item)

    def on_delta(self, item_id: str, content_index: int, b64: str) -> None:
        """A WebSocket ``response.output_audio.delta``: base64 PCM16 at 24 kHz."""
        if item_id in self.interrupted:
            self._record.metrics.dropped_late_audio_ms += pcm.ms_of(len(b64) * 3 // 4)
            return
        try:
            pcm24 = np.frombuffer(pcm.b64decode(b64), dtype=np.int16)
        except (binascii.Error, ValueError):
            self._record.metrics.malformed += 1
            self._record.malformed.record(message=f"an audio delta that is not base64 PCM16 ({len(b64)} chars)")
            return
        self._arrived(item_id, len(pcm24) / 24)
        self.item = item_id
        self.playout.push(pcm.upsample_24k_to_48k(pcm24), item_id, content_index)

    def _arrived(self, item_id: str, ms: float) -> None:
        if item_id not in self.received_ms:
            # reply audio began: the transcript holds this turn until it has been played (or cut)
            it = self._record.conv.get(item_id)
            if it is not None:
                it.audio_pending = True
        self.received_ms[item_id] = self.received_ms.get(item_id, 0.0) + ms

    # ---- item bookkeeping ----------------------------------------------------------------------------------

    def started(self, item_id: str) -> None:
        """A new assistant item: media from now on is its audio; the gate of a barge-in opens."""
        self.item = item_id
        self.gate_closed = False

    def all_arrived(self, item_id: str) -> None:
        """Every sample of the item has arrived (WS: ``response.done``; media: see :meth:`media_ended`)."""
        self.done.add(item_id)
        self.playout.end_item(item_id)

    def media_ended(self, item_id: str) -> None:
        """Paced media: the server sent the item's last sample (``output_audio_buffer.stopped``). What the
        track carries from now on (silence) is no reply."""
        self.all_arrived(item_id)
        if self.item == item_id:
            self.item = None

    def arrived_before_announced(self, item_id: str) -> bool:
        return item_id in self.received_ms and item_id not in self.done

    def release_played(self) -> None:
        """Mark replies whose audio has all been handed to the device as heard."""
        for item_id in list(self.done):
            it = self._record.conv.get(item_id)
            if it is None or not it.audio_pending:
                continue
            if self.playout.handed_ms(item_id) >= self.received_ms.get(item_id, 0.0) - 1:
                it.audio_pending = False

    def all_played(self) -> bool:
        """No reply audio is left to play: every reply item that was not cut has all arrived and been handed
        to the device (WebRTC's silence between replies does not count)."""
        for item_id, received in self.received_ms.items():
            if item_id == UNKNOWN_ITEM or item_id in self.interrupted:
                continue
            if item_id not in self.done or self.playout.handed_ms(item_id) < received - 1:
                return False
        return True

    def finished(self, item_id: str) -> bool:
        """All of the item's audio arrived and has been handed to the device (nothing left to cut)."""
        received = self.received_ms.get(item_id, 0.0)
        handed = self.playout.handed_ms(item_id)
        return item_id in self.done and handed >= received - 1 and self.playout.queued_ms <= 0
