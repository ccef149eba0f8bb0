"""Transcripts for months: one JSONL file per call in ``--transcript-dir``, older ones deleted after
``--keep-days``.

Each call's transcript is ``<dir>/kiosk-<UTC start, YYYYmmddTHHMMSSZ>-<call tag>.jsonl``
(:func:`call_transcript_path`; written by :class:`bridge.transcript.TranscriptWriter` as today). The
name carries the start time, so age never depends on a modification time that a backup tool or ``touch``
may change, and the fixed prefix is how :func:`prune` knows a file is ours.

:func:`prune` deletes only what is certainly ours and certainly old:

- regular files directly in the directory (no recursion, no symlinks, no directories), whose whole name
  matches the pattern above;
- started more than ``keep_days`` ago by the name **and** not modified for ``keep_days`` either (a file
  still being written is never deleted, even with a wrong clock in its name);
- anything in ``keep`` (the open call's file) is skipped.

Deletion errors are counted and reported (one line each), never raised: retention must not end a kiosk.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bridge.errors import ConfigError

log = logging.getLogger(__name__)

PREFIX = "kiosk-"
NAME = re.compile(r"^kiosk-(\d{8}T\d{6}Z)-([a-z0-9_]{1,40})\.jsonl$")
STAMP = "%Y%m%dT%H%M%SZ"
DAY_S = 86_400.0


def call_transcript_path(directory: Path, started_unix: float, tag: str | None = None) -> Path:
    """The transcript file for a call that started at ``started_unix``; ``tag`` (e.g. the session id,
    lower-case letters, digits and ``_``) tells calls in the same second apart (default: random)."""
    tag = (tag or secrets.token_hex(4)).lower()
    if not re.fullmatch(r"[a-z0-9_]{1,40}", tag):
        tag = re.sub(r"[^a-z0-9_]", "_", tag)[-40:] or secrets.token_hex(4)
    stamp = datetime.fromtimestamp(started_unix, UTC).strftime(STAMP)
    return directory / f"{PREFIX}{stamp}-{tag}.jsonl"


def started_at(name: str) -> float | None:
    """The start time encoded in one of our file names, or None if the name is not ours."""
    m = NAME.match(name)
    if not m:
        return None
    try:
        return datetime.strptime(m.group(1), STAMP).replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


@dataclass
class PruneReport:
    deleted: list[Path] = field(default_factory=list)
    kept: int = 0
    errors: list[str] = field(default_factory=list)


def check_keep_days(keep_days: float | None) -> None:
    if keep_days is not None and keep_days <= 0:
        raise ConfigError("--keep-days must be > 0 (leave it unset to keep transcripts forever)")


def prune(
    directory: Path, keep_days: float | None, *, now: float | None = None, keep: frozenset[Path] = frozenset()
) -> PruneReport:
    """Delete our transcripts older than ``keep_days`` from ``directory`` (see the module docstring)."""
    check_keep_days(keep_days)
    report = PruneReport()
    if keep_days is None:
        return report
    now = time.time() if now is None else now
    cutoff = now - keep_days * DAY_S
    keep_names = {p.name for p in keep if p.parent.resolve() == directory.resolve()} if keep else set()
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return report
    except OSError as exc:
        report.errors.append(f"cannot list {directory}: {exc.strerror}")
        return report
    for entry in entries:
        started = started_at(entry.name)
        if started is None or entry.name in keep_names:
            continue
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            if started >= cutoff or entry.stat(follow_symlinks=False).st_mtime >= cutoff:
                report.kept += 1
                continue
            os.unlink(entry.path)
        except FileNotFoundError:  # deleted by someone else meanwhile
            continue
        except OSError as exc:
            report.errors.append(f"cannot delete {entry.path}: {exc.strerror}")
            continue
        report.deleted.append(Path(entry.path))
    if report.deleted:
        log.info("retention: deleted %d transcripts older than %g days", len(report.deleted), keep_days)
    for err in report.errors:
        log.warning("retention: %s", err)
    return report
