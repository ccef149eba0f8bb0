"""Interleaved A/B runs of the lab: the same profiles and transports, alternating environment variants.

This machine is shared and its load moves within minutes, so two configurations are only compared in
rounds that alternate them (A, B, A, B, ...), each round a short ``bridge bench``; the medians of the
per-round p50s are printed side by side with each round's load average. A variant is a set of
``NAME=VALUE`` environment variables for the ``bridge run`` children (e.g. ``BRIDGE_PLAYOUT=steps``).
Run: ``python -m bridge.bench.ab --variants "old:BRIDGE_PLAYOUT=steps" "new:" --profiles clean,wifi``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

from bridge.bench.cli import run_lab
from bridge.bench.lab import LabSettings
from bridge.bench.profiles import parse_profiles

KEYS = ("round_trip_ms", "response_net_ms", "bargein_stop_ms", "truncation_error_abs_ms")


def parse_variant(spec: str) -> tuple[str, dict[str, str]]:
    """``"name:A=1,B=2"`` -> ("name", {"A": "1", "B": "2"})."""
    name, _, rest = spec.partition(":")
    env = dict(kv.split("=", 1) for kv in rest.split(",") if "=" in kv)
    return name or "default", env


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bridge.bench.ab", description=__doc__.splitlines()[0])
    p.add_argument("--variants", nargs="+", required=True, help='"name:VAR=VALUE,..." (at least two)')
    p.add_argument("--profiles", default="clean,wifi")
    p.add_argument("--transports", default="webrtc")
    p.add_argument("--trials", type=int, default=6)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", default="out/bench-ab")
    args = p.parse_args(argv)
    variants = [parse_variant(v) for v in args.variants]
    rows: list[dict[str, Any]] = []
    base_env = dict(os.environ)
    for rnd in range(args.rounds):
        for name, env in variants if rnd % 2 == 0 else list(reversed(variants)):
            os.environ.clear()
            os.environ.update({**base_env, **env})
            settings = LabSettings(
                transports=args.transports.split(","),
                profiles=parse_profiles(args.profiles),
                trials=args.trials,
                out_dir=Path(args.out) / f"r{rnd}-{name}",
                stock=False,
            )
            load = os.getloadavg()[0]
            doc, _ = run_lab(settings, f"ab round {rnd} {name}")
            for c in doc["cells"]:
                row = {"round": rnd, "variant": name, "load": round(load, 2), **{k: c[k]["p50"] for k in KEYS}}
                row.update(profile=c["profile"], transport=c["transport"], gaps=c["gaps_per_min"])
                rows.append(row)
                print(json.dumps(row), flush=True)
    os.environ.clear()
    os.environ.update(base_env)
    print("\n| profile | transport | variant | " + " | ".join(KEYS) + " | gaps/min | rounds |")
    print("|---" * (len(KEYS) + 5) + "|")
    for prof in args.profiles.split(","):
        for tr in args.transports.split(","):
            for name, _ in variants:
                mine = [r for r in rows if r["profile"] == prof and r["transport"] == tr and r["variant"] == name]
                if not mine:
                    continue

                def med(key: str, mine: list[dict[str, Any]] = mine) -> str:
                    vals = [r[key] for r in mine if r[key] is not None]
                    return "-" if not vals else f"{statistics.median(vals):.0f}"

                cells = " | ".join(med(k) for k in KEYS)
                print(f"| {prof} | {tr} | {name} | {cells} | {med('gaps')} | {len(mine)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
