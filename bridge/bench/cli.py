"""``bridge bench``: run the latency lab and write the table, JSON, Markdown and plots to ``--out``.

The full run is documented in docs/benchmarks.md; ``--trials`` is per transport x profile.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from bridge.bench import budget, report
from bridge.bench.lab import Lab, LabSettings
from bridge.bench.profiles import parse_profiles
from bridge.errors import ConfigError

TRANSPORTS = ("webrtc", "ws")


def settings_from_args(args: argparse.Namespace) -> LabSettings:
    transports = [t.strip() for t in args.transports.split(",") if t.strip()]
    bad = [t for t in transports if t not in TRANSPORTS]
    if not transports or bad:
        raise ConfigError(f"--transports takes {', '.join(TRANSPORTS)} (got {args.transports!r})")
    if args.trials < 2:
        raise ConfigError("--trials must be >= 2")
    stock = tuple(n.strip() for n in getattr(args, "stock", "").split(",") if n.strip())
    return LabSettings(
        transports=transports,
        profiles=parse_profiles(args.profiles),
        trials=args.trials,
        out_dir=Path(args.out),
        stock_profiles=stock or None,
    )


def run_lab(settings: LabSettings, command: str, progress: Any = None) -> tuple[dict[str, Any], dict[str, Path]]:
    """Run the lab and write every output file; returns the results document and the file paths."""
    lab = Lab(settings, progress=progress)
    t0 = time.monotonic()
    cells = lab.run()
    plain = {k: v for k, v in dataclasses.asdict(settings).items() if k not in ("profiles", "out_dir")}
    plain["profiles"] = [p.name for p in settings.profiles]
    plain["vad_silence_ms"] = lab.vad_silence_ms
    doc = report.results(
        [c.to_dict() for c in cells],
        command=command,
        settings=plain,
        paths=lab.paths,
        notes=lab.notes,
        seconds=round(time.monotonic() - t0, 1),
    )
    return doc, report.write_all(doc, settings.out_dir)


def main(args: argparse.Namespace) -> int:
    if args.live:  # the real API, speech prompts, no impairment (bridge.bench.live)
        from bridge.bench import live

        return live.main(args)
    settings = settings_from_args(args)
    command = "bridge bench " + shlex.join(
        ["--transports", args.transports, "--profiles", args.profiles, "--trials", str(args.trials)]
        + ["--stock", args.stock]
    )

    def progress(msg: str) -> None:
        if args.verbose:
            print(msg, file=sys.stderr, flush=True)

    doc, paths = run_lab(settings, command, progress)
    print(report.table(doc))
    print()
    print(budget.table(doc))
    print(f"\nwrote {', '.join(str(p) for p in paths.values())} ({doc['seconds']:.0f} s)")
    bad = [c for c in doc["cells"] if c["errors"] or not any(c[k]["n"] for k, _ in report.COLUMNS)]
    return 1 if bad else 0
