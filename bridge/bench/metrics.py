"""Per-trial numbers from one lab run: the input plan, the output recording, the transcript and the
emulator's event log. Pure: every input is data, nothing here reads clocks or files.

Time base: seconds from the input file's first sample. An output sample at ``s`` seconds from the output
file's start happened at ``s + (output_start_unix - input_start_unix)`` on that base (issue #3's
``session`` line); the emulator log's ``t`` (Unix time, same machine clock) maps by ``- input_start_unix``.

Definitions (issue #6):

- round trip: burst onset at the microphone -> its echo's onset at the speaker (emulator ``echo``);
- response: end of the user's burst -> first reply audio at the speaker, minus the emulator's think
  time. It includes the server VAD's ``silence_duration_ms`` (the wait that decides the turn ended); the
  ``net`` variant subtracts that too, leaving what transport and client add;
- barge-in stop: onset of the barge-in burst -> the interrupted reply falls silent at the speaker;
- truncation error: the server's ``conversation.item.truncated.audio_end_ms`` (what it believes was
  heard) minus the ms of that reply actually played (its sound at the speaker, onset to stop);
- gaps: quiet dips inside a continuous reply (>= 3 ms, < 60 ms), per minute of reply audio.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bridge.bench.signals import Segment, segments

SETTLE_S = 0.5  # bursts this soon after the call connected are not trials (the link may still settle)


@dataclass
class Trials:
    """Raw per-trial values of one run (ms), plus counts of trials that could not be measured."""

    round_trip_ms: list[float] = field(default_factory=list)
    response_ms: list[float] = field(default_factory=list)
    response_net_ms: list[float] = field(default_factory=list)
    bargein_stop_ms: list[float] = field(default_factory=list)
    truncation_error_ms: list[float] = field(default_factory=list)
    played_ms: list[float] = field(default_factory=list)
    reported: dict[str, list[float]] = field(default_factory=dict)  # the bridge's own latency lines
    gaps: int = 0
    audio_s: float = 0.0
    missing: int = 0  # trials whose answer never showed up at the speaker
    skipped: int = 0  # bursts before the call was up, or replies that ended before the barge-in

    @property
    def gaps_per_min(self) -> float | None:
        return self.gaps / (self.audio_s / 60) if self.audio_s > 0 else None

    def merge(self, other: Trials) -> None:
        for name in ("round_trip_ms", "response_ms", "response_net_ms", "bargein_stop_ms"):
            getattr(self, name).extend(getattr(other, name))
        self.truncation_error_ms.extend(other.truncation_error_ms)
        self.played_ms.extend(other.played_ms)
        for k, v in other.reported.items():
            self.reported.setdefault(k, []).extend(v)
        self.gaps += other.gaps
        self.audio_s += other.audio_s
        self.missing += other.missing
        self.skipped += other.skipped


@dataclass(frozen=True)
class Timing:
    """How the files line up, from the transcript's ``session`` line."""

    input_start_unix: float
    output_start_unix: float
    connected_unix: float  # when the call was up (the session line's ts)

    @property
    def offset(self) -> float:
        """Add to an output-file time to get input-file time."""
        return self.output_start_unix - self.input_start_unix

    @property
    def first_usable(self) -> float:
        return self.connected_unix - self.input_start_unix + SETTLE_S


def shifted(segs: list[Segment], offset: float) -> list[Segment]:
    return [Segment(s.start + offset, s.end + offset, s.gaps, s.gap_ms) for s in segs]


def reported_latency(lines: list[dict[str, Any]]) -> dict[str, list[float]]:
    """The bridge's own per-turn ``latency`` transcript lines, by field."""
    out: dict[str, list[float]] = {}
    for line in lines:
        if line.get("kind") != "latency":
            continue
        for key in ("response_ms", "bargein_ms", "stop_after_event_ms", "truncate_gap_ms"):
            if isinstance(line.get(key), int | float):
                out.setdefault(key, []).append(float(line[key]))
    return out


def echo_trials(bursts: list[tuple[float, float]], out: np.ndarray, timing: Timing, spacing_s: float) -> Trials:
    """Round trips: each burst's echo is the first sound in ``(onset, onset + spacing - 50 ms)``."""
    segs = shifted(segments(out), timing.offset)
    tr = Trials()
    for a, _ in bursts:
        if a < timing.first_usable:
            tr.skipped += 1
            continue
        hit = next((s for s in segs if a + 0.002 < s.start < a + spacing_s - 0.05), None)
        if hit is None:
            tr.missing += 1
            continue
        tr.round_trip_ms.append((hit.start - a) * 1000)
        tr.gaps += hit.gaps
        tr.audio_s += hit.seconds
    return tr


def truncations(log: list[dict[str, Any]], input_start_unix: float) -> list[tuple[float, int]]:
    """(time on the input base, audio_end_ms) of every ``conversation.item.truncated`` the server sent."""
    out = []
    for rec in log:
        ev = rec.get("event") or {}
        if rec.get("dir") == "out" and ev.get("type") == "conversation.item.truncated":
            out.append((float(rec["t"]) - input_start_unix, int(ev.get("audio_end_ms", 0))))
    return out


def turn_trials(
    bursts: list[tuple[float, float]],
    out: np.ndarray,
    timing: Timing,
    *,
    think_ms: float,
    vad_silence_ms: float,
    reply_s: float,
    server_log: list[dict[str, Any]] | None = None,
) -> Trials:
    """Response latency for every burst, barge-in stop and truncation error for every burst after one."""
    segs = shifted(segments(out), timing.offset)
    cuts = truncations(server_log or [], timing.input_start_unix)
    tr = Trials()
    for k, (a, b) in enumerate(bursts):
        if a < timing.first_usable:
            tr.skipped += 1
            continue
        nxt = bursts[k + 1][0] if k + 1 < len(bursts) else float("inf")
        earliest = b + vad_silence_ms / 1000 * 0.5
        reply = next((s for s in segs if earliest < s.start < nxt), None)
        if reply is None:
            tr.missing += 1
            continue
        resp = (reply.start - b) * 1000 - think_ms
        tr.response_ms.append(resp)
        tr.response_net_ms.append(resp - vad_silence_ms)
        tr.gaps += reply.gaps
        tr.audio_s += reply.seconds
        if nxt == float("inf"):
            continue
        if not (reply.end > nxt + 0.005 and reply.seconds < reply_s - 0.05):
            tr.skipped += 1  # the reply had ended (or played out) before the barge-in: nothing to stop
            continue
        tr.bargein_stop_ms.append((reply.end - nxt) * 1000)
        played = reply.seconds * 1000
        tr.played_ms.append(played)
        cut = next((ms for t, ms in cuts if nxt < t < nxt + 3.0), None)
        if cut is not None:
            tr.truncation_error_ms.append(cut - played)
    return tr


def summary(values: list[float]) -> dict[str, float | int | None]:
    """n, p50, p95, max (ms, one decimal)."""
    if not values:
        return {"n": 0, "p50": None, "p95": None, "max": None}
    a = np.asarray(values, dtype=float)
    return {
        "n": len(values),
        "p50": round(float(np.percentile(a, 50)), 1),
        "p95": round(float(np.percentile(a, 95)), 1),
        "max": round(float(a.max()), 1),
    }
