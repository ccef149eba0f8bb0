"""What the resilience bench checks in a run's files, pure (no I/O besides reading them).

- :func:`validate_transcript`: every line complete JSON, a known ``kind``, timestamps in order, no
  conversation item written twice, the last line ``stats``.
- :func:`lost_user_turns`: user turns the server committed before a fault that the transcript lacks.
- :func:`context_after`: the first reply after each reconnect quotes an earlier user turn (the emulator's
  ``quote_context``: ``You said before: "<turn N-1>".``, bridge.emulator.behaviours.quote).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

KINDS = frozenset(
    {"session", "user", "assistant", "interrupted", "error", "latency", "reconnect", "stats", "tool", "handoff"}
)
CONVERSATION = ("user", "assistant", "interrupted")
QUOTE_RE = re.compile(r'You said before: "(.*)"\.')


def read_lines(path: Path) -> list[dict[str, Any]]:
    """The transcript's complete JSON lines (a broken one is skipped: :func:`validate_transcript` counts it)."""
    out = []
    for raw in path.read_text(encoding="utf-8").splitlines() if path.is_file() else []:
        try:
            line = json.loads(raw)
        except json.JSONDecodeError:
            continue
        if isinstance(line, dict):
            out.append(line)
    return out


def validate_transcript(path: Path) -> dict[str, Any]:
    """Counts of what is wrong with the transcript (all 0 and ``ends_with_stats`` for a good one)."""
    invalid = unknown = out_of_order = duplicates = 0
    last_ts = ""
    seen: set[tuple[str, str]] = set()
    kinds: dict[str, int] = {}
    last_kind = None
    raws = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    for raw in raws:
        try:
            line = json.loads(raw)
        except json.JSONDecodeError:
            invalid += 1
            continue
        if not isinstance(line, dict) or not isinstance(line.get("ts"), str) or not isinstance(line.get("kind"), str):
            invalid += 1
            continue
        kind = line["kind"]
        kinds[kind] = kinds.get(kind, 0) + 1
        last_kind = kind
        if kind not in KINDS:
            unknown += 1
        if line["ts"] < last_ts:  # ISO-8601 UTC with ms, fixed width: string order is time order
            out_of_order += 1
        last_ts = max(last_ts, line["ts"])
        if kind in CONVERSATION:
            key = (kind, str(line.get("item_id")))
            duplicates += key in seen
            seen.add(key)
    return {
        "lines": len(raws),
        "invalid": invalid,
        "unknown_kind": unknown,
        "out_of_order": out_of_order,
        "duplicates": duplicates,
        "ends_with_stats": last_kind == "stats",
        "kinds": dict(sorted(kinds.items())),
    }


def committed_user_items(log_path: Path) -> list[tuple[float, str]]:
    """``(unix time, item id)`` of every user audio turn the emulator committed (its event log)."""
    out = []
    for rec in read_lines(log_path):
        event = rec.get("event") or {}
        if rec.get("dir") == "out" and event.get("type") == "input_audio_buffer.committed":
            out.append((float(rec["t"]), str(event.get("item_id"))))
    return out


def lost_user_turns(
    committed: list[tuple[float, str]], fault_times: list[float], lines: list[dict[str, Any]]
) -> dict[str, Any]:
    """User turns committed before a fault (before the last one injected) missing from the transcript."""
    if not fault_times:
        return {"checked": 0, "missing": 0, "missing_s_before_fault": []}
    written = {str(x.get("item_id")) for x in lines if x.get("kind") in CONVERSATION}
    faults = sorted(fault_times)
    checked, missing = 0, []
    for t, item in committed:
        after = [f for f in faults if f >= t]
        if not after:
            continue
        checked += 1
        if item not in written:
            missing.append(round(after[0] - t, 3))
    return {"checked": checked, "missing": len(missing), "missing_s_before_fault": missing}


def context_after(lines: list[dict[str, Any]]) -> dict[str, Any]:
    """For each reconnect (not renewal): does the first reply after it quote a user turn from before it?

    ``present``: the quoted words are those of a user turn before the reconnect; ``latest``: of the last
    one with words (what ``said[-2]`` in the emulator's quote must be when the history was replayed);
    ``interrupted``: that reply was cut by the user's next turn before its quote was heard (not checkable);
    ``no_reply``: the run ended before a reply came.
    """
    reconnects = present = latest = no_quote = no_reply = interrupted = 0
    examples: list[str] = []
    for i, line in enumerate(lines):
        if line.get("kind") != "reconnect" or line.get("reason") == "renewal":
            continue
        reconnects += 1
        before = [str(x["text"]) for x in lines[:i] if x.get("kind") == "user" and x.get("text")]
        reply = next((x for x in lines[i + 1 :] if x.get("kind") in ("assistant", "interrupted")), None)
        if reply is None:
            no_reply += 1
            continue
        if reply["kind"] == "interrupted":
            interrupted += 1
            continue
        m = QUOTE_RE.search(str(reply.get("text") or ""))
        if m is None:
            no_quote += 1
            if len(examples) < 3:
                examples.append(str(reply.get("text")))
            continue
        present += m.group(1) in before
        latest += bool(before) and m.group(1) == before[-1]
    out = {"reconnects": reconnects, "present": present, "latest": latest, "no_quote": no_quote}
    return {**out, "interrupted": interrupted, "no_reply": no_reply, "examples": examples}
