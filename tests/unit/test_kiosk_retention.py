"""Transcript retention: only our own old files go; everything else stays."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.errors import ConfigError
from bridge.kiosk.retention import DAY_S, call_transcript_path, prune, started_at
from bridge.transcript import TranscriptWriter

NOW = 1_800_000_000.0  # 2027-01-15


def make(path: Path, age_days: float, text: str = "{}\n") -> Path:
    path.write_text(text)
    t = NOW - age_days * DAY_S
    os.utime(path, (t, t))
    return path


def test_names_round_trip_and_sort_by_time(tmp_path: Path) -> None:
    a = call_transcript_path(tmp_path, NOW - 10, "sess_ABC123")
    b = call_transcript_path(tmp_path, NOW)
    assert a.name.startswith("kiosk-20270115T") and a.name.endswith("-sess_abc123.jsonl")
    assert started_at(a.name) == int(NOW - 10)
    assert started_at(b.name) == int(NOW)
    assert sorted([b.name, a.name]) == [a.name, b.name]
    weird = call_transcript_path(tmp_path, NOW, "../../etc/passwd")
    assert weird.parent == tmp_path and started_at(weird.name) is not None


def test_a_transcript_writer_writes_into_the_per_call_file(tmp_path: Path) -> None:
    w = TranscriptWriter(call_transcript_path(tmp_path / "t", NOW, "s1"), clock=lambda: NOW)
    w.open()
    w.write("session", id="s1")
    w.close()
    (only,) = (tmp_path / "t").iterdir()
    assert started_at(only.name) == NOW and '"kind": "session"' in only.read_text()


def test_prune_deletes_only_our_old_regular_files(tmp_path: Path) -> None:
    d = tmp_path / "transcripts"
    d.mkdir()
    old = make(call_transcript_path(d, NOW - 40 * DAY_S, "old"), 40)
    recent = make(call_transcript_path(d, NOW - 5 * DAY_S, "recent"), 5)
    in_use = make(call_transcript_path(d, NOW - 40 * DAY_S, "inuse"), 0)  # old name, written just now
    kept_open = make(call_transcript_path(d, NOW - 40 * DAY_S, "open"), 40)
    foreign = make(d / "notes.jsonl", 400)
    lookalike = make(d / "kiosk-20200101T000000Z-x.jsonl.bak", 400)
    outside = make(tmp_path / "precious.jsonl", 400)
    link = d / "kiosk-20200101T000000Z-link.jsonl"
    link.symlink_to(outside)
    os.utime(link, (0, 0), follow_symlinks=False)
    subdir = d / "kiosk-20200101T000000Z-dir.jsonl"
    subdir.mkdir()
    nested = make(subdir / call_transcript_path(subdir, NOW - 400 * DAY_S, "nested").name, 400)

    report = prune(d, 30, now=NOW, keep=frozenset({kept_open}))
    assert report.deleted == [old]
    assert report.errors == []
    assert not old.exists()
    for p in (recent, in_use, kept_open, foreign, lookalike, outside, nested):
        assert p.exists(), p
    assert link.is_symlink() and subdir.is_dir()
    assert report.kept == 2  # recent and in_use


def test_prune_keeps_everything_without_keep_days_and_tolerates_a_missing_dir(tmp_path: Path) -> None:
    old = make(call_transcript_path(tmp_path, NOW - 400 * DAY_S), 400)
    assert prune(tmp_path, None, now=NOW).deleted == []
    assert old.exists()
    assert prune(tmp_path / "missing", 30, now=NOW).deleted == []


def test_prune_reports_what_it_cannot_delete(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old = make(call_transcript_path(tmp_path, NOW - 40 * DAY_S, "a"), 40)
    older = make(call_transcript_path(tmp_path, NOW - 50 * DAY_S, "b"), 50)
    real_unlink = os.unlink

    def unlink(path: str) -> None:  # root may delete anything: refuse one file the way a read-only fs would
        if path == str(old):
            raise PermissionError(13, "Permission denied")
        real_unlink(path)

    monkeypatch.setattr(os, "unlink", unlink)
    report = prune(tmp_path, 30, now=NOW)
    assert old.exists() and not older.exists()
    assert report.deleted == [older]
    assert report.errors == [f"cannot delete {old}: Permission denied"]


def test_keep_days_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        prune(tmp_path, 0)


@given(st.text(max_size=60))
def test_started_at_accepts_only_our_pattern(name: str) -> None:
    t = started_at(name)
    assert t is None or (name.startswith("kiosk-") and name.endswith(".jsonl") and "/" not in name)
