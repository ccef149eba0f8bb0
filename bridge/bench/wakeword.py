"""Wake word benchmark: the built-in microWakeWord models (``pymicro-wakeword``) on espeak-ng phrases.

For each model: the detection rate on its own phrase (espeak-ng voices and speeds from
:mod:`bridge.bench.sounds`, clean at -20 and -35 dBFS and at -25 dBFS in pink noise or babble at 10 dB SNR),
false accepts on the other models' phrases and on the ten kiosk sentences (all voices), false accepts per
hour on the generated non-speech of :mod:`bridge.bench.sounds`, and CPU per second of audio.

    python -m bridge.bench.wakeword --minutes 5

Results: docs/kiosk.md "Wake word" and docs/benchmarks.md "Kiosk wake word".
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from bridge.bench import sounds as snd
from bridge.kiosk.wakeword import MODELS, MicroWakeWord

PHRASES = {"okay_nabu": "Okay Nabu", "hey_mycroft": "Hey Mycroft", "hey_jarvis": "Hey Jarvis", "alexa": "Alexa"}
SPEEDS = (130, 170)
Condition = tuple[str, float, float | None]
CONDITIONS: tuple[Condition, ...] = (
    ("quiet", -20.0, None),
    ("quiet", -35.0, None),
    ("pink", -25.0, 10.0),
    ("babble", -25.0, 10.0),
)


@dataclass
class WakeResult:
    model: str
    hits: dict[str, int] = field(default_factory=dict)
    trials: dict[str, int] = field(default_factory=dict)
    false_on_other_phrases: int = 0
    other_phrase_trials: int = 0
    false_on_sentences: int = 0
    sentence_trials: int = 0
    false_per_hour: dict[str, float] = field(default_factory=dict)
    cpu_per_audio_s: float = 0.0


def detections(model: MicroWakeWord, pcm: np.ndarray) -> tuple[int, float]:
    model.reset()
    n = 0
    c0 = time.process_time()
    for f in snd.frames(pcm):
        n += model.feed(f)
    return n, time.process_time() - c0


def trial(
    text: str, voice: str, speed: int, cond: tuple[str, float, float | None], cache: Path, seed: int
) -> np.ndarray:
    background, level, snr = cond
    case = snd.SpeechCase(text, voice, speed, level, background, snr)
    pcm, _, _ = snd.render_case(case, cache, seed)
    return pcm


def run(minutes: float, cache: Path) -> list[WakeResult]:
    noises = {k: snd.to_int16(v) for k, v in snd.non_speech(minutes * 60, cache).items()}
    results = []
    for name in MODELS:
        model = MicroWakeWord(name)
        res = WakeResult(name)
        cpu = audio = 0.0
        seed = 0
        for phrase_model, text in PHRASES.items():
            for voice, _ in snd.VOICES:
                for speed in SPEEDS:
                    for cond in CONDITIONS:
                        seed += 1
                        pcm = trial(text, voice, speed, cond, cache, seed)
                        n, c = detections(model, pcm)
                        cpu, audio = cpu + c, audio + len(pcm) / snd.RATE
                        if phrase_model == name:
                            label = f"{cond[0]} {cond[1]:g} dBFS" + (f" SNR {cond[2]:g}" if cond[2] else "")
                            res.trials[label] = res.trials.get(label, 0) + 1
                            res.hits[label] = res.hits.get(label, 0) + (n > 0)
                        else:
                            res.other_phrase_trials += 1
                            res.false_on_other_phrases += n > 0
        for text in snd.SENTENCES:
            for voice, speed in snd.VOICES:
                seed += 1
                pcm = trial(text, voice, speed, ("quiet", -20.0, None), cache, seed)
                n, c = detections(model, pcm)
                cpu, audio = cpu + c, audio + len(pcm) / snd.RATE
                res.sentence_trials += 1
                res.false_on_sentences += n > 0
        for kind, pcm in noises.items():
            n, c = detections(model, pcm)
            cpu, audio = cpu + c, audio + len(pcm) / snd.RATE
            res.false_per_hour[kind] = round(n / (len(pcm) / snd.RATE / 3600), 1)
        res.cpu_per_audio_s = cpu / audio
        results.append(res)
        print(f"{name}: done", file=sys.stderr)
    return results


def markdown(results: list[WakeResult], minutes: float) -> str:
    conds = list(results[0].trials)
    kinds = list(results[0].false_per_hour)
    lines = [
        "Detections of each model's own phrase (hits / trials), false accepts on the other phrases and on "
        "the ten kiosk sentences, CPU:",
        "",
        "| model | " + " | ".join(conds) + " | other phrases | sentences | CPU % of a core |",
        "|---|" + "---:|" * (len(conds) + 3),
    ]
    for r in results:
        cells = [f"{r.hits[c]}/{r.trials[c]}" for c in conds]
        lines.append(
            f"| {r.model} | "
            + " | ".join(cells)
            + f" | {r.false_on_other_phrases}/{r.other_phrase_trials} | {r.false_on_sentences}/{r.sentence_trials}"
            + f" | {100 * r.cpu_per_audio_s:.2f} |"
        )
    lines += [
        "",
        f"False accepts per hour on generated non-speech ({minutes:g} min of each):",
        "",
        "| model | " + " | ".join(kinds) + " |",
        "|---|" + "---:|" * len(kinds),
    ]
    for r in results:
        lines.append(f"| {r.model} | " + " | ".join(f"{r.false_per_hour[k]:g}" for k in kinds) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bridge.bench.wakeword", description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=5.0, help="minutes of each non-speech kind")
    p.add_argument("--cache", default=None, help="espeak-ng clip cache (default: a temporary directory)")
    p.add_argument("--out", default="out/bench-wakeword")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(args.cache) if args.cache else Path(tmp)
        cache.mkdir(parents=True, exist_ok=True)
        results = run(args.minutes, cache)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps([asdict(r) for r in results], indent=1))
    table = markdown(results, args.minutes)
    (out / "table.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
