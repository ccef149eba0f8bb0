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

With the emulator's log, trials are matched through what the server saw (:class:`ServerView`): a
response belongs to the burst whose end the server's VAD placed where the microphone file has it, and
its first sound at the speaker must come after the server sent its first audio. A network that makes a
transport fall seconds behind (or drop microphone audio) then shows as missing trials, not as replies
matched to the wrong burst. The same log splits each trial into stages (``Trials.stages``, the latency
budget of docs/benchmarks.md): ``uplink`` (audio captured -> the server's VAD has it), ``server`` (the
VAD's end of turn -> first reply audio on the wire, minus the think time), ``downlink`` (first reply
audio on the wire -> its sound at the speaker), ``stop_path`` (speech detected at the server -> the
interrupted reply silent at the speaker), ``echo_back`` (the echo's round trip minus its uplink),
``vad_detect`` (speech onset -> the position where the VAD decided speech started) and ``vad_align``
(the end of speech -> the VAD's ``audio_end_ms``, beyond ``silence_duration_ms``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bridge.bench.signals import Segment, segments

SETTLE_S = 0.5  # bursts this soon after the call connected are not trials (the link may still settle)
MIN_SPEECH_MS = 30  # the emulator's VAD decides "speech" after this much loud audio (bridge.emulator.vad)
MATCH_EARLY_MS = 30  # a VAD position may sit this much before the file's edge (10 ms frames, 2 ms ramps)
MATCH_LATE_MS = 60  # ... or this much after it


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
    stages: dict[str, list[float]] = field(default_factory=dict)  # the latency budget, per trial (ms)
    gaps: int = 0
    audio_s: float = 0.0
    missing: int = 0  # trials whose answer never showed up at the speaker
    skipped: int = 0  # bursts before the call was up, or replies that ended before the barge-in

    def stage(self, name: str, ms: float) -> None:
        self.stages.setdefault(name, []).append(ms)

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
        for k, v in other.stages.items():
            self.stages.setdefault(k, []).extend(v)
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


@dataclass(frozen=True)
class VadEvent:
    """A ``speech_started`` / ``speech_stopped`` the server sent: when (input base, s) and where (ms)."""

    t: float
    position_ms: int  # audio_start_ms / audio_end_ms on the server's input timeline
    item_id: str


@dataclass
class ServerView:
    """What the emulator's log says the server saw and did, on the input file's time base (seconds)."""

    started: list[VadEvent] = field(default_factory=list)
    stopped: list[VadEvent] = field(default_factory=list)
    first_audio: list[float] = field(default_factory=list)  # first reply audio on the wire, per response
    truncations: list[tuple[float, int]] = field(default_factory=list)

    @classmethod
    def from_log(cls, log: list[dict[str, Any]], input_start_unix: float) -> ServerView:
        """Parse the log. First audio on the wire: ``output_audio_buffer.started`` (WebRTC: sent when the
        track takes the reply's first frame) or a response's first ``response.output_audio.delta`` (WS)."""
        view = cls()
        seen: set[str] = set()
        for rec in log:
            ev = rec.get("event") or {}
            if rec.get("dir") != "out" or not isinstance(ev, dict):
                continue
            t = float(rec.get("t", 0.0)) - input_start_unix
            kind = ev.get("type")
            if kind == "input_audio_buffer.speech_started":
                view.started.append(VadEvent(t, int(ev.get("audio_start_ms", 0)), str(ev.get("item_id", ""))))
            elif kind == "input_audio_buffer.speech_stopped":
                view.stopped.append(VadEvent(t, int(ev.get("audio_end_ms", 0)), str(ev.get("item_id", ""))))
            elif kind in ("output_audio_buffer.started", "response.output_audio.delta"):
                rid = str(ev.get("response_id", ""))
                if rid not in seen:
                    seen.add(rid)
                    view.first_audio.append(t)
            elif kind == "conversation.item.truncated":
                view.truncations.append((t, int(ev.get("audio_end_ms", 0))))
        return view

    @property
    def usable(self) -> bool:
        return bool(self.started or self.stopped)

    def start_near(self, position_ms: float, padding_ms: float) -> VadEvent | None:
        """The ``speech_started`` whose loud start is the onset at ``position_ms`` of the input file."""
        for e in self.started:
            if -MATCH_EARLY_MS <= e.position_ms + padding_ms - position_ms <= MATCH_LATE_MS:
                return e
        return None

    def stop_near(self, position_ms: float) -> VadEvent | None:
        """The ``speech_stopped`` at ``position_ms`` of the input file (end of speech + silence_duration)."""
        for e in self.stopped:
            if -MATCH_EARLY_MS <= e.position_ms - position_ms <= MATCH_LATE_MS:
                return e
        return None


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


def echo_trials(
    bursts: list[tuple[float, float]],
    out: np.ndarray,
    timing: Timing,
    spacing_s: float,
    server: ServerView | None = None,
    padding_ms: float = 300,
) -> Trials:
    """Round trips: each burst's echo is the first sound in ``(onset, onset + spacing - 50 ms)``. With the
    server's view, each also gives its ``uplink`` and ``echo_back`` (the round trip minus the uplink)."""
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
        rtt = (hit.start - a) * 1000
        tr.round_trip_ms.append(rtt)
        tr.gaps += hit.gaps
        tr.audio_s += hit.seconds
        start = server.start_near(a * 1000, padding_ms) if server is not None else None
        if start is not None:
            uplink = _uplink_ms(start, padding_ms)
            tr.stage("uplink", uplink)
            tr.stage("echo_back", rtt - uplink)
    return tr


def _uplink_ms(start: VadEvent, padding_ms: float) -> float:
    """How long after the microphone captured it the server's VAD processed the position where it decided
    speech had started (the loud start plus ``MIN_SPEECH_MS``)."""
    decided = start.position_ms + padding_ms + MIN_SPEECH_MS
    return start.t * 1000 - decided


def turn_trials(
    bursts: list[tuple[float, float]],
    out: np.ndarray,
    timing: Timing,
    *,
    think_ms: float,
    vad_silence_ms: float,
    reply_s: float,
    server_log: list[dict[str, Any]] | None = None,
    padding_ms: float = 300,
) -> Trials:
    """Response latency for every burst, barge-in stop and truncation error for every burst after one."""
    segs = shifted(segments(out), timing.offset)
    server = ServerView.from_log(server_log or [], timing.input_start_unix)
    matched = server.usable and bool(server.first_audio)
    tr = Trials()
    for k, (a, b) in enumerate(bursts):
        if a < timing.first_usable:
            tr.skipped += 1
            continue
        nxt = bursts[k + 1][0] if k + 1 < len(bursts) else float("inf")
        if matched:
            reply, stop, first_out = _matched_reply(server, segs, b, nxt, vad_silence_ms)
        else:
            earliest = b + vad_silence_ms / 1000 * 0.5
            reply = next((s for s in segs if earliest < s.start < nxt), None)
            stop, first_out = None, None
        if reply is None:
            tr.missing += 1
            continue
        resp = (reply.start - b) * 1000 - think_ms
        tr.response_ms.append(resp)
        tr.response_net_ms.append(resp - vad_silence_ms)
        tr.gaps += reply.gaps
        tr.audio_s += reply.seconds
        if stop is not None and first_out is not None:
            tr.stage("vad_align", stop.position_ms - (b * 1000 + vad_silence_ms))
            tr.stage("uplink", stop.t * 1000 - stop.position_ms)
            tr.stage("server", (first_out - stop.t) * 1000 - think_ms)
            tr.stage("downlink", (reply.start - first_out) * 1000)
        if nxt == float("inf"):
            continue
        if not (reply.end > nxt + 0.005 and reply.seconds < reply_s - 0.05):
            tr.skipped += 1  # the reply had ended (or played out) before the barge-in: nothing to stop
            continue
        tr.bargein_stop_ms.append((reply.end - nxt) * 1000)
        played = reply.seconds * 1000
        tr.played_ms.append(played)
        start = server.start_near(nxt * 1000, padding_ms) if matched else None
        if start is not None:
            tr.stage("vad_detect", start.position_ms + padding_ms + MIN_SPEECH_MS - nxt * 1000)
            tr.stage("uplink", _uplink_ms(start, padding_ms))
            tr.stage("stop_path", (reply.end - start.t) * 1000)
        after = start.t if start is not None else nxt
        cut = next((ms for t, ms in server.truncations if after <= t < after + 3.0), None)
        if cut is not None:
            tr.truncation_error_ms.append(cut - played)
    return tr


def _matched_reply(
    server: ServerView, segs: list[Segment], b: float, nxt: float, vad_silence_ms: float
) -> tuple[Segment | None, VadEvent | None, float | None]:
    """The reply to the burst ending at ``b``, through the server: its end of turn, the first audio it sent
    after that, and the first sound at the speaker after that audio left (before the next burst's reply)."""
    stop = server.stop_near(b * 1000 + vad_silence_ms)
    if stop is None:
        return None, None, None
    first_out = next((t for t in server.first_audio if t >= stop.t), None)
    if first_out is None:
        return None, stop, None
    limit = max(nxt, first_out) + 3.0
    reply = next((s for s in segs if first_out <= s.start < limit), None)
    return reply, stop, first_out


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
