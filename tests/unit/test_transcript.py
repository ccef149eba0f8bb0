"""Transcript ordering by previous_item_id, hold-back of unfinished items, and the heard-text estimate."""

from __future__ import annotations

import json

from bridge.transcript import Conversation, TranscriptWriter, heard_text, iso_utc


def test_late_user_transcript_still_comes_first() -> None:
    conv = Conversation()
    user = conv.add("u1", "user", None)
    bot = conv.add("a1", "assistant", "u1")
    bot.text, bot.final = "Hello there", True
    assert conv.ready() == []  # the user's transcription has not arrived yet
    user.text, user.final = "hi", True
    assert [i.item_id for i in conv.ready()] == ["u1", "a1"]
    assert conv.ready() == []


def test_items_inserted_after_their_previous_item() -> None:
    conv = Conversation()
    conv.add("a", "user", None)
    conv.add("c", "assistant", "a")
    conv.add("b", "user", "a")  # inserted right after "a", before "c"
    for item in (conv.get("a"), conv.get("b"), conv.get("c")):
        assert item is not None
        item.final = True
    assert [i.item_id for i in conv.ready()] == ["a", "b", "c"]


def test_missing_transcript_released_after_hold() -> None:
    now = [0.0]
    conv = Conversation(hold_s=5.0, clock=lambda: now[0])
    user = conv.add("u1", "user", None)
    user.done_at = 0.0
    assert conv.ready() == []
    now[0] = 5.0
    (item,) = conv.ready()
    assert item.line() == {"kind": "user", "item_id": "u1", "text": None}


def test_interrupted_line_carries_heard_text() -> None:
    conv = Conversation()
    bot = conv.add("a1", "assistant", None)
    bot.text, bot.final, bot.interrupted_ms, bot.total_ms = "one two three four", True, 500.0, 1000.0
    line = conv.ready()[0].line()
    assert line["kind"] == "interrupted" and line["played_ms"] == 500
    assert line["text"] == "one two"  # 9 of 18 characters, cut back to a word boundary


def test_heard_text_by_speaking_rate_when_length_unknown() -> None:
    assert heard_text("abc def ghi", 10_000, None) == "abc def ghi"
    assert heard_text("abcdefghijkl mnop", 400, None) == "abcdef"
    assert heard_text("whatever", 0, None) == ""


def test_writer_flushes_each_line(tmp_path) -> None:
    path = tmp_path / "sub" / "t.jsonl"
    w = TranscriptWriter(path, clock=lambda: 1_700_000_000.1234)
    w.open()
    w.write("session", model="m")
    lines = path.read_text().splitlines()  # readable before close: flushed
    assert json.loads(lines[0]) == {"ts": "2023-11-14T22:13:20.123Z", "kind": "session", "model": "m"}
    w.close()
    assert iso_utc(0.5) == "1970-01-01T00:00:00.500Z"
