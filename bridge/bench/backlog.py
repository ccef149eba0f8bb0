"""How long the connect-time backlog takes to drain (bridge.kiosk.preroll), on both transports.

Offline and deterministic: espeak-ng visitors (the ten kiosk sentences of :mod:`bridge.bench.sounds` in five
voices) speak to the real local VAD (:class:`bridge.kiosk.vad.VoiceActivity`, the shipped engine); the
onset opens a :class:`~bridge.kiosk.preroll.Backlog` seeded from a real :class:`~bridge.kiosk.preroll.PreRoll`;
the call is "up" ``connect`` seconds after the onset; from then on the uplink drains it:

- WebRTC: one frame per 20 ms tick through :meth:`Backlog.next_paced` (silence away from speech dropped);
  reported: the lag when the call comes up, how long after that the uplink is live again ("caught up"),
  and how late the end of the visitor's first turn reaches the server (the lag when its last speech
  frame is sent: what the first reply is delayed by). The silence dropped always equals the lag at call
  up once caught up (every frame held is either sent in its tick or dropped), so it is in the JSON only;
- WebSocket: :meth:`Backlog.take_all` at once; reported: the bytes that one append carries (PCM16
  24 kHz, base64) and the time to send them at 2 and 10 Mbit/s of uplink.

Scenarios: ``one sentence`` (then the visitor waits), ``two sentences`` (0.8 s apart), and ``hello, pause,
question`` (1.5 s apart).

    python -m bridge.bench.backlog --connect 0.3,0.6,1.0,2.0
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bridge.bench import sounds as snd
from bridge.kiosk.preroll import Backlog, DrainSettings, PreRoll
from bridge.kiosk.vad import FRAME_SAMPLES, GateSettings, VoiceActivity, load_engine

FRAME_S = FRAME_SAMPLES / snd.RATE
WS_BYTES_PER_S = 24_000 * 2 * 4 / 3  # PCM16 at 24 kHz, base64


@dataclass(frozen=True)
class Outcome:
    scenario: str
    connect_s: float
    lag_at_ready_s: float
    caught_up_after_ready_s: float
    turn_end_delay_s: float
    dropped_silence_s: float
    ws_bytes: int


def scenarios(cache: Path) -> list[tuple[str, np.ndarray, float]]:
    """(name, int16 audio, end of the first turn in seconds) per voice and sentence pair."""
    rng = np.random.default_rng(7)
    out = []
    quiet = 1.0

    def clip(text: str, voice: str, speed: int) -> np.ndarray:
        x = snd.espeak(text, voice, speed, cache)
        first, last = snd.speech_onset(x)
        return snd.rms_to(x[int(first * snd.RATE) : int(last * snd.RATE)], -22)

    def gap(seconds: float) -> np.ndarray:
        return np.zeros(int(seconds * snd.RATE), dtype=np.float32)

    for voice, speed in snd.VOICES:
        for k, text in enumerate(snd.SENTENCES[2:], start=2):
            a = clip(text, voice, speed)
            b = clip(snd.SENTENCES[(k + 1 - 2) % 8 + 2], voice, speed)
            hello = clip("Hello.", voice, speed)
            for name, parts in (
                ("one sentence", [gap(quiet), a, gap(4.0)]),
                ("two sentences", [gap(quiet), a, gap(0.8), b, gap(4.0)]),
                ("hello, pause, question", [gap(quiet), hello, gap(1.5), a, gap(4.0)]),
            ):
                x = np.concatenate(parts)
                end = sum(len(p) for p in parts[:-1]) / snd.RATE
                x = x + snd.rms_to(rng.standard_normal(len(x)).astype(np.float32), -65)
                out.append((name, snd.to_int16(x), end))
    return out


def simulate(pcm: np.ndarray, turn_end_s: float, connect_s: float, scenario: str) -> Outcome | None:
    """One visitor, one connect time; None when the VAD never woke (counted by the caller)."""
    va = VoiceActivity(load_engine(), GateSettings())
    preroll = PreRoll(0.8)
    drain = DrainSettings()
    release = va.gate.settings.release
    backlog: Backlog | None = None
    ready_tick = -1
    lag_at_ready = caught_up = turn_end_delay = -1.0
    ws_bytes = 0
    n = len(pcm) // FRAME_SAMPLES
    for i in range(n):
        t = (i + 1) * FRAME_S
        f = pcm[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES]
        v = va.feed(f, t)
        speech = v.probability >= release
        if backlog is None:
            preroll.push(f, t, speech)
            if v.event is not None and v.event.kind == "onset":
                backlog = preroll.start_backlog(v.event.speech_from - drain.lead_s, drain)
                ready_tick = i + round(connect_s / FRAME_S)
            continue
        if caught_up >= 0:
            if turn_end_delay < 0 and t >= turn_end_s:
                turn_end_delay = 0.0
            continue
        preroll.push(f, t, speech)  # routed into the backlog
        if i < ready_tick:
            continue
        if i == ready_tick:
            lag_at_ready = backlog.lag_s
            ws_bytes = round(len(backlog) * FRAME_S * WS_BYTES_PER_S)
        sent = backlog.next_paced()
        if sent is not None and turn_end_delay < 0 and sent.captured >= turn_end_s:
            turn_end_delay = t - sent.captured
        if len(backlog) == 0:
            caught_up = t - ready_tick * FRAME_S - FRAME_S
    if backlog is None or caught_up < 0:
        return None
    return Outcome(
        scenario,
        connect_s,
        round(lag_at_ready, 3),
        round(caught_up, 3),
        round(max(0.0, turn_end_delay), 3),
        round(backlog.dropped_silence * FRAME_S, 3),
        ws_bytes,
    )


def table(outcomes: list[Outcome], missed: int) -> str:
    lines = [
        "| scenario | connect | lag at call up | WebRTC: live again after | WebRTC: first turn's end late by | "
        "WS: one append | WS at 2 / 10 Mbit/s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    keys = sorted({(o.scenario, o.connect_s) for o in outcomes}, key=lambda k: (k[0], k[1]))
    for scenario, connect in keys:
        group = [o for o in outcomes if o.scenario == scenario and o.connect_s == connect]

        def cell(values: list[float]) -> str:
            return f"{np.median(values):.2f} s (max {max(values):.2f})"

        kb = float(np.median([o.ws_bytes for o in group])) / 1000
        lines.append(
            f"| {scenario} | {connect:g} s | {cell([o.lag_at_ready_s for o in group])} | "
            f"{cell([o.caught_up_after_ready_s for o in group])} | {cell([o.turn_end_delay_s for o in group])} | "
            f"{kb:.0f} KB | "
            f"{kb * 8 / 2000:.2f} / {kb * 8 / 10000:.2f} s |"
        )
    lines.append("")
    lines.append(
        f"Medians (and maxima) over {len(outcomes) // max(1, len(keys))} visitors per row; {missed} not woken."
    )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bridge.bench.backlog", description=__doc__.split("\n")[0])
    p.add_argument("--connect", default="0.3,0.6,1.0,2.0", help="seconds from onset to call up, comma-separated")
    p.add_argument("--cache", default=None)
    p.add_argument("--out", default="out/bench-backlog")
    args = p.parse_args(argv)
    connects = [float(x) for x in args.connect.split(",")]
    outcomes: list[Outcome] = []
    missed = 0
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(args.cache) if args.cache else Path(tmp)
        cache.mkdir(parents=True, exist_ok=True)
        for name, pcm, end in scenarios(cache):
            for c in connects:
                o = simulate(pcm, end, c, name)
                if o is None:
                    missed += 1
                else:
                    outcomes.append(o)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps([o.__dict__ for o in outcomes], indent=1))
    text = table(outcomes, missed)
    (out / "table.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
