"""Open speakers end to end: ``bridge run`` in the echo room, with and without echo cancellation.

``eval "$(scripts/pulse-up.sh)"; python -m bridge.bench.aec_run`` (the private PulseAudio daemon's virtual
devices). The echo room (:mod:`bridge.bench.echo_room`) sends what the speaker plays back into the
microphone; ``bridge emulate --behaviour speech`` answers each question with a spoken sentence and its server
VAD takes anything over -40 dBFS for the user. Per transport and ``--aec`` setting, one call:

- ``--questions`` questions (espeak-ng, played into ``micsink``), each after the last reply has finished
  playing (:class:`Speaker` listens to ``spk.monitor``). A reply cut off although nobody spoke over it is a
  self-interruption; the rate is per minute of reply audio heard at the speaker.
- with echo cancellation: ``--bargeins`` times, "Wait, stop." 1 s into a reply (over its echo): the
  ``latency`` line's ``bargein_ms`` (speech onset to the reply silent, the bridge's own timeline) and the
  stop as the speaker's monitor saw it (from the start of the talker's sentence, whose first ~50 ms are
  espeak-ng's lead-in, to the speaker's last loud 10 ms).

Prints JSON and a Markdown table. The same harness runs in CI (tests/integration/test_aec_run.py).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bridge.bench import echo_sim as sim
from bridge.bench.echo_room import RoomSpec, running

QUESTIONS = (
    "What is the weather like in Berlin today?",
    "And how about tomorrow morning?",
    "Thank you, that is all for now.",
    "Could you tell me a little more about the museum?",
    "When does it open on Sundays?",
    "Is there a cafe inside the building?",
    "How much is a ticket for a student?",
    "Great, thank you very much.",
)
STOP = "Wait, stop."
VOICE = "en-gb+m3"
QUIET_DBFS = -50.0
BLOCK_S = 0.01
RUNAWAY_S = 30.0
"""A speaker that does not go quiet for this long after a question: the echo keeps answering itself."""


class Speaker:
    """What the virtual speaker plays (``parec`` on ``spk.monitor``, 16 kHz, 10 ms blocks): when it was loud."""

    def __init__(self, env: dict[str, str], device: str = "spk.monitor") -> None:
        self.last_loud = time.monotonic()
        self.loud_blocks = 0
        self.loud_times: list[float] = []
        self._proc = subprocess.Popen(
            ["parec", "-d", device, "--raw", "--format=s16le", "--rate=16000", "--channels=1", "--latency-msec=10"],
            env=env,
            stdout=subprocess.PIPE,
        )
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        floor = 32768 * 10 ** (QUIET_DBFS / 20)
        while block := self._proc.stdout.read(320):
            pcm = np.frombuffer(block[: len(block) // 2 * 2], dtype=np.int16).astype(np.float64)
            if len(pcm) and float(np.sqrt(np.mean(pcm**2))) > floor:
                now = time.monotonic()
                self.last_loud = now
                self.loud_blocks += 1
                self.loud_times.append(now)

    def quiet_for(self) -> float:
        return time.monotonic() - self.last_loud

    def loud_seconds(self) -> float:
        return self.loud_blocks * BLOCK_S

    def last_loud_before(self, t: float) -> float | None:
        before = [x for x in self.loud_times if x <= t]
        return before[-1] if before else None

    def close(self) -> None:
        self._proc.terminate()
        self._proc.wait(5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.endswith("}")]


def replies(path: Path) -> int:
    return len([x for x in lines(path) if x["kind"] in ("assistant", "interrupted")])


def wait(pred: Callable[[], object], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


def say(work: Path, name: str, text: str, env: dict[str, str]) -> float:
    """Play ``text`` into the microphone; returns when its speech began (monotonic, approximate)."""
    wav = work / f"{name}.wav"
    if not wav.exists():
        from bridge.bench.signals import write_wav

        write_wav(wav, sim.to_int16(sim.espeak(text, VOICE, peak=0.35)))
    t0 = time.monotonic()
    subprocess.run(["paplay", "-d", "micsink", str(wav)], env=env, check=True, timeout=30)
    return t0


@contextmanager
def emulator(env: dict[str, str]) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bridge", "emulate", "--behaviour", "speech", "--think-ms", "200", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
    )
    try:

        def listening() -> bool:
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0

        wait(listening, "the emulator", 20)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        proc.wait(10)


@dataclass
class Conversation:
    transcript: Path
    log: Path
    returncode: int | None = None
    reply_seconds: float = 0.0
    stops_ms: list[float] = field(default_factory=list)
    runaway: bool = False

    @property
    def lines(self) -> list[dict[str, Any]]:
        return lines(self.transcript)


def converse(
    env: dict[str, str],
    api: str,
    work: Path,
    transport: str,
    *flags: str,
    questions: tuple[str, ...] = QUESTIONS[:3],
    bargein_after_s: float | None = None,
    extra: tuple[str, ...] = (),
) -> Conversation:
    """One ``bridge run`` call: ask ``questions``, each after the last reply has finished playing; with
    ``bargein_after_s``, say :data:`STOP` that long into each reply. ``env`` has the daemon and the key."""
    name = f"{transport}-{'-'.join(f.strip('-') for f in flags) or 'default'}"
    name += "-bargein" if bargein_after_s is not None else ""  # its own files: the calls must not mix
    conv = Conversation(work / f"{name}.jsonl", work / f"{name}.log")
    run = subprocess.Popen(
        [sys.executable, "-m", "bridge", "run", "--transport", transport, *flags, "-v", *extra]
        + ["--api-base", api, "--transcript", str(conv.transcript)],
        env=env,
        stderr=conv.log.open("w"),
    )
    speaker = Speaker(env)
    try:
        wait(lambda: any(x["kind"] == "session" for x in conv.lines), "the session", 30)
        for k, text in enumerate(questions):
            done, loud = replies(conv.transcript), speaker.loud_blocks
            say(work, f"q{k}", text, env)
            if bargein_after_s is not None:
                wait(lambda: speaker.loud_blocks > loud + 10, "the reply to play", 30)  # noqa: B023 (waited now)
                time.sleep(bargein_after_s)  # the script: the user talks over the reply 1 s into it
                t_stop = say(work, "stop", STOP, env)
                stopped = speaker.last_loud_before(time.monotonic())
                if stopped is not None:
                    conv.stops_ms.append(max(0.0, (stopped - t_stop) * 1000))
            wait(lambda: replies(conv.transcript) > done, f"a reply to question {k + 1}", 40)  # noqa: B023
            try:
                wait(lambda: speaker.quiet_for() > 0.8, "the reply to finish playing", RUNAWAY_S)
            except TimeoutError:  # the echo answers itself: reply, echo, "speech", reply, ... without end
                conv.runaway = True
                break
    finally:
        conv.reply_seconds = speaker.loud_seconds()
        speaker.close()
        run.send_signal(2)
        try:
            run.wait(15)
        except subprocess.TimeoutExpired:
            run.kill()
        conv.returncode = run.returncode
    return conv


def _summary(conv: Conversation, bargein: bool) -> dict[str, Any]:
    ls = conv.lines
    kinds = [x["kind"] for x in ls]
    out: dict[str, Any] = {
        "replies": kinds.count("assistant") + kinds.count("interrupted"),
        "interrupted": kinds.count("interrupted"),
        "reply_audio_s": round(conv.reply_seconds, 1),
        "user_turns": kinds.count("user"),
        "runaway": conv.runaway,
    }
    if not bargein:
        minutes = conv.reply_seconds / 60
        out["self_interruptions_per_min"] = round(kinds.count("interrupted") / minutes, 1) if minutes else None
    else:
        ms = [float(x["bargein_ms"]) for x in ls if x["kind"] == "latency" and x.get("bargein_ms") is not None]
        out["bargein_ms"] = sorted(ms)
        out["bargein_ms_median"] = round(float(np.median(ms)), 1) if ms else None
    stats = next((x for x in ls if x["kind"] == "stats"), {})
    out["sink_underruns"] = stats.get("sink_underruns")
    if "aec" in stats:
        out["erle_db"] = stats["aec"]["erle_db"]
        out["delay_ms"] = stats["aec"]["delay_ms"]
    return out


def bench(args: argparse.Namespace) -> dict[str, Any]:
    if "PULSE_SERVER" not in os.environ:
        raise SystemExit('start the virtual devices first: eval "$(scripts/pulse-up.sh)"')
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env.update(OPENAI_API_KEY="sk-bench-aec", XDG_STATE_HOME=str(work / "state"))
    out: dict[str, Any] = {"room": RoomSpec().__dict__, "questions": args.questions, "cells": []}
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.load)]
    out["load"] = args.load
    try:
        _cells(args, env, work, out)
    finally:
        for hog in hogs:
            hog.kill()
    return out


def _cells(args: argparse.Namespace, env: dict[str, str], work: Path, out: dict[str, Any]) -> None:
    with running(RoomSpec(), env), emulator(env) as api:
        for transport in args.transports:
            for aec in args.aec.split(","):
                conv = converse(env, api, work, transport, "--aec", aec, questions=QUESTIONS[: args.questions])
                out["cells"].append({"transport": transport, "aec": aec, **_summary(conv, bargein=False)})
                print(json.dumps(out["cells"][-1]), file=sys.stderr)
            if args.bargeins:
                conv = converse(
                    env, api, work, transport, "--aec", "on", questions=QUESTIONS[: args.bargeins], bargein_after_s=1.0
                )
                out["cells"].append({"transport": transport, "aec": "on", "bargein": True, **_summary(conv, True)})
                out["cells"][-1]["stop_ms_at_speaker"] = [round(x) for x in conv.stops_ms]
                print(json.dumps(out["cells"][-1]), file=sys.stderr)


def table(result: dict[str, Any]) -> str:
    rows = [
        "| transport | --aec | replies | cut off | reply audio s | self-interruptions / min | barge-in ms (median) |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for c in result["cells"]:
        rate = c.get("self_interruptions_per_min")
        barge = f"{c['bargein_ms']} ({c['bargein_ms_median']})" if c.get("bargein_ms") else "-"
        over = " (talking over it)" if c.get("bargein") else ""
        over += " (replies answered their own echo without end: stopped asking)" if c.get("runaway") else ""
        rows.append(
            f"| {c['transport']} | {c['aec']}{over} | {c['replies']} | {c['interrupted']} | {c['reply_audio_s']} | "
            f"{'-' if rate is None else rate} | {barge} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bridge.bench.aec_run", description=__doc__.splitlines()[0])
    p.add_argument("--transports", default="webrtc,ws")
    p.add_argument("--questions", type=int, default=8, help=f"questions per call (at most {len(QUESTIONS)})")
    p.add_argument("--bargeins", type=int, default=5, help="barge-ins with echo cancellation per transport")
    p.add_argument("--work", default="out/aec-run", metavar="DIR")
    p.add_argument("--load", type=int, default=0, help="busy processes competing for the CPU meanwhile")
    p.add_argument("--aec", default="off,on", help="--aec settings to compare")
    p.add_argument("--out", default=None, metavar="FILE.json")
    args = p.parse_args(argv)
    args.transports = [t.strip() for t in args.transports.split(",") if t.strip()]
    result = bench(args)
    text = json.dumps(result, indent=2)
    print(text)
    print(table(result))
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
