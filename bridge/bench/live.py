"""``bridge bench --live``: the speech-based subset of the lab against the real Realtime API (issue #6).

No namespaces and no impairment: the real network is the impairment. For each transport one real
``bridge run`` subprocess with ``.wav`` devices talks to the API base (``BRIDGE_BENCH_API_BASE``, else
``OPENAI_BASE_URL``, else the OpenAI default) with the key from ``OPENAI_API_KEY``; the key only ever
travels in the child's environment, never on a command line or in a file we write.

The microphone file holds ``trials`` spoken questions (espeak-ng, short ones the model understands).
After each question a barge-in utterance ("Wait, stop.") is placed about ``into_reply_s`` into the
expected reply. A pre-rendered file cannot react to when the reply really starts, so the real offset is
measured and reported (``bargein_into_reply_ms``); a reply that had not started or had already ended at
the barge-in is counted as skipped, not measured.

Measured black-box from the audio, on the lab's time base (:mod:`bridge.bench.metrics`):

- response: end of the question's speech -> first reply audio at the speaker. Raw: it includes the
  server VAD's ``silence_duration_ms`` and the model's own time (nothing is known to subtract);
- barge-in stop: onset of the barge-in speech -> the interrupted reply falls silent at the speaker.
  Speech has pauses between words, so the stop is the end of the last sound that starts before the
  reply to the barge-in could begin (barge-in end + most of the VAD silence): anything in that window
  can only be the interrupted reply.

plus the bridge's own ``latency`` transcript lines and the client's CPU % and peak RSS.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bridge.bench import metrics, report, signals
from bridge.bench.lab import RUN_GRACE_S, run_monitored, timing_of
from bridge.config import DEFAULT_API_BASE, env, normalize_api_base
from bridge.errors import BridgeError, ConfigError

log = logging.getLogger(__name__)

TRANSPORTS = ("webrtc", "ws")
MAX_TRIALS = 50  # bounded run time: at most ~10 min per transport
QUESTIONS = (
    "What is the capital of France?",
    "How many legs does a spider have?",
    "Why is the sky blue?",
    "What is the tallest mountain in the world?",
    "Who wrote Romeo and Juliet?",
    "How far away is the Moon?",
    "What do bees make?",
    "Why do leaves change colour in autumn?",
)
BARGEIN = "Wait, stop."
# Long answers so the barge-in lands inside the reply; a one-word answer to the barge-in so it does not
# run into the next question.
INSTRUCTIONS = (
    "You are being used for a latency benchmark. Answer every question in four or five full spoken "
    "sentences. If the user says 'wait, stop', answer with just the word 'Okay.'"
)
PEAK = 0.5  # spoken prompts are normalised to -6 dBFS peak: plain speech level for server VAD


@dataclass(frozen=True)
class LiveSettings:
    transports: list[str]
    trials: int
    out_dir: Path
    api_base: str
    lead_s: float = 1.5  # silence before the first question (the call settles)
    expect_response_s: float = 1.2  # guess of question end -> reply start, to place the barge-in
    into_reply_s: float = 1.5  # where the barge-in should land in the reply
    gap_s: float = 5.0  # barge-in end -> next question (the short answer to "wait, stop" plays here)
    tail_s: float = 2.5  # after the last barge-in: its stop and the bridge's latency line


@dataclass(frozen=True)
class Trial:
    """One question and its barge-in, seconds from the input file's first sample (speech bounds)."""

    question: str
    q_start: float
    q_end: float
    b_start: float
    b_end: float


@dataclass(frozen=True)
class LivePlan:
    trials: list[Trial]
    audio: np.ndarray

    @property
    def seconds(self) -> float:
        return len(self.audio) / signals.RATE


@dataclass
class LiveCell:
    """Everything measured for one transport."""

    transport: str
    trials: metrics.Trials = field(default_factory=metrics.Trials)
    into_reply_ms: list[float] = field(default_factory=list)
    cpu_pct: float | None = None
    rss_mb: float | None = None
    connect_s: float | None = None
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        t = self.trials
        return {
            "transport": self.transport,
            "profile": "live",
            "response_ms": metrics.summary(t.response_ms),
            "bargein_stop_ms": metrics.summary(t.bargein_stop_ms),
            "bargein_into_reply_ms": metrics.summary(self.into_reply_ms),
            "reported": {k: metrics.summary(v) for k, v in t.reported.items()},
            "missing": t.missing,
            "skipped": t.skipped,
            "cpu_pct": None if self.cpu_pct is None else round(self.cpu_pct, 1),
            "rss_mb": None if self.rss_mb is None else round(self.rss_mb, 1),
            "connect_s": None if self.connect_s is None else round(self.connect_s, 2),
            "errors": self.errors,
            "raw": {
                "response_ms": [round(v, 1) for v in t.response_ms],
                "bargein_stop_ms": [round(v, 1) for v in t.bargein_stop_ms],
                "bargein_into_reply_ms": [round(v, 1) for v in self.into_reply_ms],
            },
        }


def check_guards(environ: dict[str, str] | os._Environ[str], *, allow_ci: bool = False) -> str:
    """The API base to use, or a one-line :class:`ConfigError`. ``allow_ci`` is for tests only: they
    point the live path at a local emulator, which is safe in CI; a real run never is (issue #6)."""
    if not allow_ci and environ.get("CI", "").strip().lower() in ("true", "1", "yes"):
        raise ConfigError("--live refuses to run in CI (CI=true): it measures the real, paid API")
    if not environ.get("OPENAI_API_KEY", "").strip():
        raise ConfigError("--live needs OPENAI_API_KEY in the environment (it measures the real API)")
    base = environ.get("BRIDGE_BENCH_API_BASE", "").strip() or environ.get("OPENAI_BASE_URL", "").strip()
    return normalize_api_base(base or DEFAULT_API_BASE)


def speak(text: str, rate: int = signals.RATE) -> np.ndarray:
    """``text`` spoken by espeak-ng, int16 at ``rate``, -6 dBFS peak (as bridge.app.demo_input does)."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise ConfigError("--live needs espeak-ng to speak its prompts (apt install espeak-ng)")
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.wav"
        subprocess.run([exe, "-v", "en-us", "-s", "160", "-w", str(raw), text], check=True, timeout=30)
        with wave.open(str(raw), "rb") as w:
            src = w.getframerate()
            x = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).astype(np.float64)
    n = int(len(x) * rate / src)
    y = np.interp(np.linspace(0, len(x) - 1, n), np.arange(len(x)), x)
    peak = float(np.abs(y).max()) or 1.0
    return (y / peak * PEAK * 32767).astype(np.int16)


def _bounds(x: np.ndarray) -> tuple[float, float]:
    """First onset and last end of sound in an utterance (the same detector as the speaker side)."""
    segs = signals.segments(x)
    if not segs:
        raise BridgeError("espeak-ng produced silence")
    return segs[0].start, segs[-1].end


def build_plan(s: LiveSettings, vad_silence_ms: float) -> LivePlan:
    """The microphone file: question, barge-in ``into_reply_s`` into the expected reply, pause, ..."""
    stop = speak(BARGEIN)
    s_on, s_off = _bounds(stop)
    placed: list[tuple[float, np.ndarray]] = []
    trials = []
    t = s.lead_s
    for i in range(s.trials):
        text = QUESTIONS[i % len(QUESTIONS)]
        q = speak(text)
        q_on, q_off = _bounds(q)
        q_start, q_end = t + q_on, t + q_off
        placed.append((t, q))
        b_at = q_end + s.expect_response_s + s.into_reply_s - s_on  # file position of the utterance
        placed.append((b_at, stop))
        trials.append(Trial(text, q_start, q_end, b_at + s_on, b_at + s_off))
        t = b_at + s_off + s.gap_s
    total = trials[-1].b_end + max(s.tail_s, vad_silence_ms / 1000 + 1.0)
    audio = np.zeros(int(total * signals.RATE), dtype=np.int16)
    for at, x in placed:
        i = int(round(at * signals.RATE))
        audio[i : i + len(x)] = x[: len(audio) - i]
    return LivePlan(trials, audio)


def measure(
    plan: LivePlan, out: np.ndarray, timing: metrics.Timing, vad_silence_ms: float
) -> tuple[metrics.Trials, list[float]]:
    """Per-trial response and barge-in stop from the speaker recording (see the module docstring)."""
    segs = metrics.shifted(signals.segments(out), timing.offset)
    tr = metrics.Trials()
    into: list[float] = []
    for k in plan.trials:
        if k.q_start < timing.first_usable:
            tr.skipped += 1
            continue
        reply = next((s for s in segs if k.q_end + 0.05 < s.start < k.b_start), None)
        if reply is None:
            tr.missing += 1  # no answer before the barge-in (or none at all)
            continue
        tr.response_ms.append((reply.start - k.q_end) * 1000)
        window_end = k.b_end + 0.8 * vad_silence_ms / 1000  # the barge-in's own answer cannot start sooner
        stop = max(s.end for s in segs if reply.start <= s.start < window_end)
        if stop <= k.b_start + 0.005:
            tr.skipped += 1  # the reply had ended before the barge-in: nothing to stop
            continue
        tr.bargein_stop_ms.append((stop - k.b_start) * 1000)
        into.append((k.b_start - reply.start) * 1000)
    return tr, into


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    out = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut short by a crash
    return out


def _vad_silence_ms() -> int:
    from bridge.protocol.session_config import default_turn_detection

    return int(default_turn_detection()["silence_duration_ms"])


class LiveRun:
    """Runs every transport against the API base; :meth:`run` returns the cells and writes raw files."""

    def __init__(self, settings: LiveSettings, *, progress: Any = None) -> None:
        self.settings = settings
        self.progress = progress or (lambda msg: None)
        self.vad_silence_ms = _vad_silence_ms()

    def run(self) -> list[LiveCell]:
        s = self.settings
        raw = s.out_dir / "live-raw"
        raw.mkdir(parents=True, exist_ok=True)
        plan = build_plan(s, self.vad_silence_ms)
        signals.write_wav(raw / "live_in.wav", plan.audio)
        (raw / "live_plan.json").write_text(
            json.dumps(
                [{k: round(v, 3) if isinstance(v, float) else v for k, v in t.__dict__.items()} for t in plan.trials],
                indent=1,
            )
            + "\n",
            encoding="utf-8",
        )
        cells = []
        for transport in s.transports:
            cell = LiveCell(transport)
            self.progress(
                f"bench --live: {transport}: {len(plan.trials)} questions with barge-in ({plan.seconds:.0f} s)"
            )
            self._one(cell, plan, raw)
            self.progress(f"bench --live: {transport}: {_short(cell)}")
            cells.append(cell)
        return cells

    def _one(self, cell: LiveCell, plan: LivePlan, d: Path) -> None:
        s = self.settings
        name = f"live_{cell.transport}"
        out, transcript = d / f"{name}.wav", d / f"{name}.jsonl"
        for f in (out, transcript):
            f.unlink(missing_ok=True)
        argv = [sys.executable, "-m", "bridge", "run", "--transport", cell.transport]
        argv += ["--input", str(d / "live_in.wav"), "--output", str(out), "--transcript", str(transcript)]
        argv += ["--duration", f"{plan.seconds:.1f}", "--instructions", INSTRUCTIONS]
        # The key stays in the environment; the base goes there too so a .env cannot redirect it.
        child_env = {**os.environ, "OPENAI_BASE_URL": s.api_base}
        for name_ in ("BRIDGE_TOKEN_URL", "BRIDGE_TOKEN_SECRET"):
            child_env.pop(name_, None)  # measure the direct path, not a token server
        result = run_monitored(argv, child_env, plan.seconds + RUN_GRACE_S, d, name)
        if result.returncode != 0 or not out.is_file():
            tail = result.stderr.strip().splitlines()[-1:] or [f"exit {result.returncode}"]
            cell.errors.append(f"exit {result.returncode}: {tail[0][:200]}")
            return
        try:
            timing = timing_of(transcript)
        except BridgeError as exc:
            cell.errors.append(str(exc))
            return
        tr, into = measure(plan, signals.read_wav(out), timing, self.vad_silence_ms)
        tr.reported = metrics.reported_latency(_read_jsonl(transcript))
        cell.trials.merge(tr)
        cell.into_reply_ms += into
        cell.connect_s = timing.connected_unix - timing.input_start_unix
        cell.cpu_pct, cell.rss_mb = result.cpu_pct, result.rss_mb


def _short(cell: LiveCell) -> str:
    d = cell.to_dict()
    parts = [f"{label} p50 {d[k]['p50']} ms" for k, label in (("response_ms", "resp"), ("bargein_stop_ms", "stop"))]
    if cell.errors:
        parts.append(f"error: {cell.errors[0]}")
    return ", ".join(parts)


# --- output -------------------------------------------------------------------------------------------

HEADER = [
    "transport",
    "response p50/p95/max ms",
    "barge-in stop p50/p95/max ms",
    "barge-in into reply p50 ms",
    "response (bridge) p50",
    "barge-in (bridge) p50",
    "stop after event (bridge) p50",
    "trunc. gap (bridge) p50",
    "CPU %",
    "RSS MB",
    "n",
    "missing/skipped",
]


def _fmt3(v: dict[str, Any] | None) -> str:
    if not v or not v.get("n"):
        return "-"
    return f"{v['p50']:.0f} / {v['p95']:.0f} / {v['max']:.0f}"


def _p50(v: dict[str, Any] | None) -> str:
    return "-" if not v or not v.get("n") else f"{v['p50']:.0f}"


def _row(c: dict[str, Any]) -> list[str]:
    rep = c.get("reported", {})
    return [
        c["transport"],
        _fmt3(c["response_ms"]),
        _fmt3(c["bargein_stop_ms"]),
        _p50(c["bargein_into_reply_ms"]),
        _p50(rep.get("response_ms")),
        _p50(rep.get("bargein_ms")),
        _p50(rep.get("stop_after_event_ms")),
        _p50(rep.get("truncate_gap_ms")),
        "-" if c["cpu_pct"] is None else f"{c['cpu_pct']:.1f}",
        "-" if c["rss_mb"] is None else f"{c['rss_mb']:.0f}",
        str(c["response_ms"]["n"]),
        f"{c['missing']}/{c['skipped']}",
    ]


def table(doc: dict[str, Any]) -> str:
    rows = [HEADER, *(_row(c) for c in doc["cells"])]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.insert(0, f"API base: {doc['api_base']}")
    return "\n".join(lines + [f"error: {c['transport']}: {e}" for c in doc["cells"] for e in c["errors"]])


def markdown(doc: dict[str, Any]) -> str:
    m = doc["machine"]
    rows = [HEADER, ["---"] * len(HEADER), *(_row(c) for c in doc["cells"])]
    lines = [
        f"Date: {doc['date']}  ",
        f"Command: `{doc['command']}` against `{doc['api_base']}`  ",
        f"Machine: {m['nproc']} cores, {m['cpu']}, Linux {m['kernel']}, Python {m['python']}, "
        f"aiortc {m.get('aiortc', '?')}, commit {m.get('commit') or '?'}",
        "",
        *("| " + " | ".join(r) + " |" for r in rows),
        "",
        "Response is raw (end of the spoken question -> first reply audio at the speaker): it includes the "
        f"server VAD's {doc['settings']['vad_silence_ms']} ms silence and the model's own time.",
    ]
    lines += [f"- error: {c['transport']}: {e}" for c in doc["cells"] for e in c["errors"]]
    return "\n".join(lines) + "\n"


def write_all(doc: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """``live.json`` and ``live.md`` next to the lab's ``results.*`` (never overwriting them)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "live.json", "md": out_dir / "live.md"}
    paths["json"].write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    paths["md"].write_text(markdown(doc), encoding="utf-8")
    return paths


def run_live(settings: LiveSettings, command: str, progress: Any = None) -> tuple[dict[str, Any], dict[str, Path]]:
    """Run every transport and write the outputs; returns the results document and the file paths."""
    t0 = time.monotonic()
    live = LiveRun(settings, progress=progress)
    cells = live.run()
    plain = {
        "transports": settings.transports,
        "trials": settings.trials,
        "expect_response_s": settings.expect_response_s,
        "into_reply_s": settings.into_reply_s,
        "vad_silence_ms": live.vad_silence_ms,
        "instructions": INSTRUCTIONS,
    }
    doc = report.results(
        [c.to_dict() for c in cells],
        command=command,
        settings=plain,
        api_base=settings.api_base,
        seconds=round(time.monotonic() - t0, 1),
    )
    return doc, write_all(doc, settings.out_dir)


def settings_from_args(args: Any, api_base: str) -> LiveSettings:
    transports = [t.strip() for t in args.transports.split(",") if t.strip()]
    bad = [t for t in transports if t not in TRANSPORTS]
    if not transports or bad:
        raise ConfigError(f"--transports takes {', '.join(TRANSPORTS)} (got {args.transports!r})")
    if not 1 <= args.trials <= MAX_TRIALS:
        raise ConfigError(f"--live takes 1..{MAX_TRIALS} --trials")
    expect = env("BRIDGE_BENCH_EXPECT_RESPONSE_S")
    extra = {"expect_response_s": float(expect)} if expect else {}
    return LiveSettings(transports=transports, trials=args.trials, out_dir=Path(args.out), api_base=api_base, **extra)


def main(args: Any, *, allow_ci: bool = False) -> int:
    """``bridge bench --live``. Asks nothing; prints the API base first; every run is time-bounded."""
    api_base = check_guards(os.environ, allow_ci=allow_ci)
    settings = settings_from_args(args, api_base)
    if getattr(args, "profiles", "clean") != "clean":
        print("bridge bench --live: --profiles does not apply (the real network is the profile)", file=sys.stderr)
    per_trial = 1.8 + settings.expect_response_s + settings.into_reply_s + 0.8 + settings.gap_s
    budget = len(settings.transports) * (settings.trials * per_trial + RUN_GRACE_S)
    print(
        f"bridge bench --live: API base {api_base} (key from OPENAI_API_KEY); transports "
        f"{','.join(settings.transports)}, {settings.trials} trial(s) each; at most ~{budget / 60:.0f} min",
        flush=True,
    )
    command = "bridge bench --live " + shlex.join(
        ["--transports", ",".join(settings.transports), "--trials", str(settings.trials)]
    )

    def progress(msg: str) -> None:
        if getattr(args, "verbose", 0):
            print(msg, file=sys.stderr, flush=True)

    doc, paths = run_live(settings, command, progress)
    print(table(doc))
    print(f"\nwrote {', '.join(str(p) for p in paths.values())} ({doc['seconds']:.0f} s)")
    bad = [c for c in doc["cells"] if c["errors"] or not c["response_ms"]["n"]]
    return 1 if bad else 0
