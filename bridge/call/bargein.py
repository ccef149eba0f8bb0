"""Barge-in on one connection: the user speaks over the assistant, playback stops, the server learns what
was heard.

When ``input_audio_buffer.speech_started`` arrives (or the push-to-talk key is pressed) while assistant
audio is queued or playing:

- both transports: ``playout.flush(fade_ms)`` (the sink stops within one device block, with a short fade)
  and audio of the interrupted item still in flight is discarded (:class:`ReplyAudio`);
- the server truncates by itself (``LinkTraits.server_truncates``, WebRTC: PROTOCOL.md 2.3): it cuts at
  what it has *sent*; we only record how far its ``conversation.item.truncated.audio_end_ms`` is from what
  we actually played. A manual barge-in cancels and clears the server's buffer (PROTOCOL.md 4.5);
- otherwise (WebSocket) we tell the server what was heard: ``response.cancel`` when the server is not
  already cancelling (``interrupt_response`` off, or push-to-talk), then ``conversation.item.truncate``
  with ``audio_end_ms = min(played, received)`` (PROTOCOL.md 4.5); nothing played yet means the item is
  deleted once its response is done instead of being truncated to 0; an item that finished playing is
  left alone.

Each barge-in writes a ``latency`` line once the sink confirms playback stopped: ``stop_after_event_ms``,
``bargein_ms`` (from the user's speech onset, when the server timeline is known) and, where the server
truncates, ``truncate_gap_ms``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Literal

from bridge.call.record import CallRecord
from bridge.call.reply_audio import UNKNOWN_ITEM, ReplyAudio
from bridge.link.base import RealtimeLink
from bridge.media.playout import FlushResult

log = logging.getLogger(__name__)

FADE_MS = 5
BargeInMode = Literal["exact", "naive"]  # naive: keep playing (what a plain client does); for comparisons
TRUNCATED_WAIT_S = 1.0  # extra time for the server's conversation.item.truncated
STOP_WAIT_S = 0.5  # how long to wait for the sink to report playback stopped after a flush
STOP_POLL_S = 0.005


@dataclass
class BargeIn:
    """One barge-in: when it was detected, what had been played, and what the server later said."""

    item_id: str
    t_event: float  # monotonic: speech_started arrived (or the push-to-talk key)
    event_unix: float
    onset: float | None  # monotonic: the user's speech began (from the server's audio_start_ms)
    played_ms: float
    flush: FlushResult | None = None
    truncate_gap_ms: float | None = None  # server truncation: its audio_end_ms minus played_ms
    truncated: asyncio.Event = field(default_factory=asyncio.Event)


class BargeInHandler:
    """Barge-in for one connection (see module docstring). ``spawn`` runs a helper coroutine in the
    connection's TaskGroup."""

    def __init__(
        self,
        link: RealtimeLink,
        reply: ReplyAudio,
        record: CallRecord,
        spawn: Callable[[Coroutine[Any, Any, None]], None],
        send: Callable[[dict[str, Any]], Coroutine[Any, Any, None]],
        *,
        mode: BargeInMode = "exact",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.link = link
        self.send = send
        self.reply = reply
        self.record = record
        self.mode: BargeInMode = mode
        self._spawn = spawn
        self._clock = clock
        self.last: BargeIn | None = None
        self._pending_delete: dict[str, str] = {}  # response_id -> item to delete once it is done

    async def barge_in(
        self, onset: float | None, *, manual: bool, response_id: str | None, server_cancels: bool
    ) -> None:
        """``response_id``: the response writing to the conversation now; ``server_cancels``: the server's
        VAD cancels it by itself (``interrupt_response``)."""
        t_event, t_unix = self._clock(), time.time()
        reply = self.reply
        item = reply.item
        if item is None or item in reply.interrupted:
            if manual and response_id is not None:
                await self.send({"type": "response.cancel"})  # generating, no audio yet
            return
        if reply.finished(item):
            return  # it all played: nothing to cut, nothing to tell the server
        playout = reply.playout
        played = playout.played_ms(item)
        received = reply.received_ms.get(item, 0.0)
        bargein = BargeIn(item, t_event, t_unix, onset, played)
        self.last = bargein
        if self.mode == "naive":
            # what a plain client does: nothing. Kept to measure the difference (tests, bench).
            self.record.write("latency", item_id=item, speech_started_unix=round(t_unix, 6), naive=True)
            return
        bargein.flush = playout.flush(FADE_MS, discard=True)  # also gates late audio of the item
        playout.ungate(UNKNOWN_ITEM)  # untagged WebRTC audio of later responses must still play
        reply.interrupted.add(item)
        reply.item = None
        it = self.record.conv.get(item) or self.record.conv.add(item, "assistant", None)
        it.interrupted_ms = played
        if item in reply.done:
            it.total_ms = received
        if self.link.traits.server_truncates:
            reply.gate_closed = True
            if manual:  # PROTOCOL.md 4.5: cancel, then clear; the server truncates at what it sent
                if response_id is not None:
                    await self.send({"type": "response.cancel"})
                await self.send({"type": "output_audio_buffer.clear"})
        else:
            await self._tell_server_what_was_heard(item, played, received, response_id, manual or not server_cancels)
        self._spawn(self._report_stop(bargein))

    async def _tell_server_what_was_heard(
        self, item: str, played: float, received: float, response_id: str | None, cancel: bool
    ) -> None:
        """Cancel if the server won't, then truncate at what was heard (or delete)."""
        if response_id is not None and cancel:
            await self.send({"type": "response.cancel"})
        end_ms = int(min(played, received))
        if end_ms > 0:
            await self.send(
                {"type": "conversation.item.truncate", "item_id": item, "content_index": 0, "audio_end_ms": end_ms}
            )
        elif response_id is not None:
            self._pending_delete[response_id] = item  # delete once the response has finished
        else:
            await self.send({"type": "conversation.item.delete", "item_id": item})

    async def response_done(self, response_id: str) -> None:
        """Delete an item that was interrupted before any of it was heard, now that its response is over."""
        item = self._pending_delete.pop(response_id, None)
        if item is not None:
            await self.send({"type": "conversation.item.delete", "item_id": item})
            self.record.conv.remove(item)

    def truncated(self, item_id: str, end_ms: int) -> None:
        """The server's ``conversation.item.truncated``: how far it is from what we played."""
        b = self.last
        if b is None or b.item_id != item_id:
            return
        gap = round(end_ms - b.played_ms, 1)
        b.truncate_gap_ms = gap
        b.truncated.set()
        self.record.metrics.truncate_gap_ms.append(gap)
        log.info("server truncated %s at %d ms; played %.0f ms (gap %.1f ms)", item_id, end_ms, b.played_ms, gap)

    async def _report_stop(self, b: BargeIn) -> None:
        """Wait (bounded) for the sink to confirm playback stopped, then write the barge-in latency."""
        flush = b.flush
        assert flush is not None
        try:
            async with asyncio.timeout(STOP_WAIT_S):
                # set by the sink's own (PortAudio) thread, which cannot touch an asyncio.Event: polled
                while flush.stopped_at is None:  # noqa: ASYNC110
                    await asyncio.sleep(STOP_POLL_S)
        except TimeoutError:
            log.warning("the sink did not confirm the barge-in flush within %.1f s", STOP_WAIT_S)
            return
        stopped = flush.stopped_at
        if self.link.traits.server_truncates:  # the server's conversation.item.truncated says what it believes
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(TRUNCATED_WAIT_S):
                    await b.truncated.wait()
        metrics = self.record.metrics
        stop_ms = round((stopped - b.t_event) * 1000, 1)
        metrics.stop_after_event_ms.append(stop_ms)
        fields: dict[str, Any] = {
            "item_id": b.item_id,
            "speech_started_unix": round(b.event_unix, 6),
            "stop_after_event_ms": stop_ms,
        }
        if b.onset is not None:
            fields["bargein_ms"] = round((stopped - b.onset) * 1000, 1)
            metrics.bargein_ms.append(fields["bargein_ms"])
        if b.truncate_gap_ms is not None:
            fields["truncate_gap_ms"] = b.truncate_gap_ms
        self.record.write("latency", **fields)
