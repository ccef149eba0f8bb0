"""A connection's runtime (barge-in, transcript order, malformed events) over a scripted link, with the
real PlayoutBuffer.

The "device" is the test calling ``playout.pull(480)`` (10 ms blocks at 48 kHz), so how much was played
is exact and under the test's control.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from bridge.call.runtime import Runtime
from bridge.link.base import Transport
from bridge.link.scripted import ScriptedLink
from bridge.media.playout import PlayoutBuffer
from bridge.protocol import events as ev
from bridge.protocol import pcm
from tests.helpers import Quiet, scripted_runtime, transcript_lines

BLOCK = 480  # 10 ms


def make(tmp_path, transport: Transport = "ws", interrupt: bool = True) -> tuple[Runtime, ScriptedLink, PlayoutBuffer]:
    rt, link, playout = scripted_runtime(tmp_path, transport)
    rt.turns.interrupt_response = interrupt
    return rt, link, playout


def lines(rt: Runtime) -> list[dict[str, Any]]:
    return transcript_lines(rt.transcript.path)


async def feed(rt: Runtime, *events: dict[str, Any]) -> None:
    for e in events:
        await rt.handle(ev.parse({"event_id": "event_x", **e}))


def tone_b64(ms: int) -> str:
    t = np.arange(ms * 24) / 24000
    return pcm.b64encode((np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16).tobytes())


async def reply_announced(rt: Runtime, item: str = "item_a") -> None:
    """``response.created`` + ``response.output_item.added`` (an assistant message) for resp_1."""
    await feed(
        rt,
        {"type": "response.created", "response": {"id": "resp_1", "status": "in_progress"}},
        {
            "type": "response.output_item.added",
            "response_id": "resp_1",
            "output_index": 0,
            "item": {"id": item, "type": "message", "role": "assistant", "content": []},
        },
    )


async def start_reply(rt: Runtime, item: str = "item_a", audio_ms: int = 2000) -> None:
    await reply_announced(rt, item)
    await feed(
        rt,
        {
            "type": "conversation.item.added",
            "previous_item_id": None,
            "item": {"id": item, "type": "message", "role": "assistant", "content": []},
        },
    )
    for _ in range(audio_ms // 100):  # deltas arrive much faster than real time
        await feed(
            rt,
            {
                "type": "response.output_audio.delta",
                "response_id": "resp_1",
                "item_id": item,
                "output_index": 0,
                "content_index": 0,
                "delta": tone_b64(100),
            },
        )


def play(playout: PlayoutBuffer, ms: int) -> np.ndarray:
    return np.concatenate([playout.pull(BLOCK) for _ in range(ms // 10)])


SPEECH = {"type": "input_audio_buffer.speech_started", "audio_start_ms": 1000, "item_id": "item_u2"}


async def test_ws_bargein_flushes_and_truncates_at_played_position(tmp_path) -> None:
    rt, link, playout = make(tmp_path)
    await start_reply(rt)
    assert playout.queued_ms == pytest.approx(2000)
    play(playout, 300)
    await feed(rt, SPEECH)
    after = play(playout, 20)
    assert not after[BLOCK:].any(), "audio still sounding one block after the barge-in"
    assert playout.queued_ms == 0
    (truncate,) = [e for e in link.sent if e["type"] == "conversation.item.truncate"]
    assert truncate["item_id"] == "item_a" and truncate["content_index"] == 0
    # the last 10 ms block handed over may still be inside the device: within one block of 300 ms
    assert 290 <= truncate["audio_end_ms"] <= 300 and isinstance(truncate["audio_end_ms"], int)
    assert "response.cancel" not in link.sent_types()  # the server cancels by itself (interrupt_response)
    # late deltas of the interrupted item are dropped, not played
    await feed(
        rt,
        {
            "type": "response.output_audio.delta",
            "response_id": "resp_1",
            "item_id": "item_a",
            "output_index": 0,
            "content_index": 0,
            "delta": tone_b64(100),
        },
    )
    assert playout.queued_ms == 0 and rt.metrics.dropped_late_audio_ms == pytest.approx(100)


async def test_ws_bargein_sends_cancel_when_server_will_not(tmp_path) -> None:
    rt, link, playout = make(tmp_path, interrupt=False)
    await start_reply(rt)
    play(playout, 120)
    await feed(rt, SPEECH)
    assert link.sent_types() == ["response.cancel", "conversation.item.truncate"]
    assert 110 <= link.sent[1]["audio_end_ms"] <= 120


async def test_nothing_played_deletes_instead_of_truncating_to_zero(tmp_path) -> None:
    rt, link, playout = make(tmp_path)
    await start_reply(rt)
    await feed(rt, SPEECH)
    assert "conversation.item.truncate" not in link.sent_types()
    await feed(
        rt,
        {
            "type": "response.done",
            "response": {
                "id": "resp_1",
                "status": "cancelled",
                "status_details": {"type": "cancelled", "reason": "turn_detected"},
            },
        },
    )
    assert link.sent == [{"type": "conversation.item.delete", "item_id": "item_a"}]


async def test_finished_item_is_not_truncated(tmp_path) -> None:
    rt, link, playout = make(tmp_path)
    await start_reply(rt, audio_ms=200)
    await feed(rt, {"type": "response.done", "response": {"id": "resp_1", "status": "completed"}})
    play(playout, 250)
    await feed(rt, SPEECH)
    assert link.sent == []


async def test_interrupted_turn_in_transcript_with_heard_text(tmp_path) -> None:
    rt, link, playout = make(tmp_path)
    await start_reply(rt, audio_ms=1000)
    await feed(
        rt,
        {
            "type": "response.output_audio_transcript.delta",
            "response_id": "resp_1",
            "item_id": "item_a",
            "output_index": 0,
            "content_index": 0,
            "delta": "one two three four",
        },
    )
    await feed(rt, {"type": "response.done", "response": {"id": "resp_1", "status": "completed"}})
    play(playout, 500)
    await feed(rt, SPEECH)
    await feed(
        rt,
        {
            "type": "response.output_audio_transcript.done",
            "response_id": "resp_1",
            "item_id": "item_a",
            "output_index": 0,
            "content_index": 0,
            "transcript": "one two three four",
        },
    )
    (line,) = [x for x in lines(rt) if x["kind"] == "interrupted"]
    assert line["item_id"] == "item_a" and 490 <= line["played_ms"] <= 500 and line["text"] == "one two"


async def test_webrtc_bargein_gates_inflight_audio_and_measures_truncate_gap(tmp_path) -> None:
    rt, link, playout = make(tmp_path, transport="webrtc")
    await reply_announced(rt)
    frame = (np.ones(960) * 1000).astype(np.int16)
    for _ in range(3):
        rt.on_remote_audio(frame)
    play(playout, 40)
    await feed(rt, SPEECH)
    rt.on_remote_audio(frame)  # in flight when the server stopped: never played
    play(playout, 10)  # the fade block
    assert playout.queued_ms == 0 and link.sent == []  # over WebRTC the server truncates by itself
    await feed(rt, {"type": "conversation.item.truncated", "item_id": "item_a", "content_index": 0, "audio_end_ms": 60})
    (gap,) = rt.metrics.truncate_gap_ms
    assert 20 <= gap <= 30  # server sent 60 ms; we played 30-40 (the last block may still be sounding)
    await feed(rt, {"type": "response.created", "response": {"id": "resp_2", "status": "in_progress"}})
    rt.on_remote_audio(frame)
    assert playout.queued_ms == 20  # the next response plays again


async def test_user_text_item_and_late_transcription_order(tmp_path) -> None:
    rt, link, playout = make(tmp_path)
    rt.turns.transcription = True
    await feed(
        rt,
        {
            "type": "conversation.item.added",
            "previous_item_id": None,
            "item": {"id": "u1", "type": "message", "role": "user", "content": [{"type": "input_audio"}]},
        },
        {
            "type": "conversation.item.done",
            "previous_item_id": None,
            "item": {"id": "u1", "type": "message", "role": "user", "content": [{"type": "input_audio"}]},
        },
        {
            "type": "conversation.item.added",
            "previous_item_id": "u1",
            "item": {"id": "a1", "type": "message", "role": "assistant", "content": []},
        },
        {
            "type": "response.output_audio_transcript.done",
            "response_id": "r",
            "item_id": "a1",
            "output_index": 0,
            "content_index": 0,
            "transcript": "Hi!",
        },
    )
    assert [x["kind"] for x in lines(rt)] == []
    await feed(
        rt,
        {
            "type": "conversation.item.input_audio_transcription.completed",
            "item_id": "u1",
            "content_index": 0,
            "transcript": "hello",
        },
    )
    assert [(x["kind"], x["text"]) for x in lines(rt)] == [("user", "hello"), ("assistant", "Hi!")]


async def test_errors_are_logged_and_benign_cancel_error_is_quiet(tmp_path) -> None:
    rt, link, playout = make(tmp_path)
    await feed(
        rt,
        {
            "type": "error",
            "error": {
                "type": "invalid_request_error",
                "code": "response_cancel_not_active",
                "message": "no active response",
                "param": None,
                "event_id": None,
            },
        },
    )
    await feed(
        rt,
        {
            "type": "error",
            "error": {
                "type": "invalid_request_error",
                "code": "invalid_value",
                "message": "bad",
                "param": "type",
                "event_id": None,
            },
        },
    )
    console = rt.record.console
    assert isinstance(console, Quiet) and console.errors == ["invalid_value: bad"]
    assert [x["code"] for x in lines(rt) if x["kind"] == "error"] == ["response_cancel_not_active", "invalid_value"]


async def test_malformed_server_events_are_dropped_and_the_session_goes_on(tmp_path) -> None:
    rt, link, playout = make(tmp_path)
    await feed(
        rt,
        {"type": "response.done", "response": "not an object"},
        {"type": 42},
        {"no": "type"},
        {"type": "input_audio_buffer.speech_started"},  # required fields missing
        {"type": "response.output_audio.delta", "response_id": "r", "item_id": "i", "output_index": 0,
         "content_index": 0, "delta": "%%% not base64 %%%"},
        {"type": "response.output_audio.delta", "response_id": "r", "item_id": "i", "output_index": 0,
         "content_index": 0, "delta": "AA=="},  # one byte: not PCM16
        {"type": "some.future_event", "x": 1},
    )  # fmt: skip
    assert rt.metrics.malformed == 4  # the two typed-but-broken events and the two bad deltas
    await start_reply(rt, audio_ms=200)  # and the session still works
    assert playout.queued_ms == pytest.approx(200)
