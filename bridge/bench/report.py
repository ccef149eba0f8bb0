"""Lab output: terminal table, JSON, Markdown and PNG plots (latency CDFs per profile, WS vs WebRTC).

All functions take the results document built by :func:`results` (plain JSON data), so a report can
be redrawn from ``results.json`` without rerunning the lab.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bridge.bench import budget
from bridge.bench.profiles import PROFILES

COLUMNS = [
    ("round_trip_ms", "mouth-to-ear RTT"),
    ("response_net_ms", "response (net)"),
    ("bargein_stop_ms", "barge-in stop"),
    ("truncation_error_abs_ms", "|truncation err|"),
]
TARGETS = {  # issues #3 and #4, this machine
    "round_trip_ms": "webrtc p50 <= 90 ms (#3)",
    "bargein_stop_ms": "reply silent <= 40 ms after speech_started (#3), <= 30 ms (#4)",
    "truncation_error_abs_ms": "<= 60 ms WebRTC (#3), <= 20 ms WS (#4)",
    "cpu_pct": "<= 8 % of one core (#3)",
}


def machine() -> dict[str, Any]:
    """What ran the numbers: cores, CPU model, kernel, Python and library versions."""
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for mod in ("aiortc", "aiohttp", "av", "numpy"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - a missing optional module just isn't listed
            continue
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        **versions,
        "commit": commit or None,
    }


def results(cells: list[dict[str, Any]], *, command: str, settings: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command,
        "machine": machine(),
        "settings": settings,
        "profiles": {name: PROFILES[name].describe() for name in settings.get("profiles", []) if name in PROFILES},
        **extra,
        "cells": cells,
    }


def _fmt(s: dict[str, Any] | None) -> str:
    if not s or not s.get("n"):
        return "-"
    return f"{s['p50']:.0f} / {s['p95']:.0f} / {s['max']:.0f}"


def _row(c: dict[str, Any]) -> list[str]:
    gaps = "-" if c.get("gaps_per_min") is None else f"{c['gaps_per_min']:.1f}"
    cpu = "-" if c.get("cpu_pct") is None else f"{c['cpu_pct']:.1f}"
    rss = "-" if c.get("rss_mb") is None else f"{c['rss_mb']:.0f}"
    n = max((c[k]["n"] for k, _ in COLUMNS), default=0)
    return [c["profile"], c["transport"], *(_fmt(c[k]) for k, _ in COLUMNS), gaps, cpu, rss, str(n)]


HEADER = [
    "profile",
    "transport",
    *(f"{label} p50/p95/max ms" for _, label in COLUMNS),
    "gaps/min",
    "CPU %",
    "RSS MB",
    "n",
]


def table(doc: dict[str, Any]) -> str:
    """Fixed-width terminal table."""
    rows = [HEADER, *(_row(c) for c in doc["cells"])]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    errors = [f"{c['profile']}/{c['transport']}: {e}" for c in doc["cells"] for e in c.get("errors", [])]
    return "\n".join(lines + [f"error: {e}" for e in errors] + [f"note: {n}" for n in doc.get("notes", [])])


def markdown_table(doc: dict[str, Any]) -> str:
    header = [h.replace("|", "\\|") for h in HEADER]  # "|truncation err|" must not split the cell
    rows = [header, ["---"] * len(HEADER), *(_row(c) for c in doc["cells"])]
    return "\n".join("| " + " | ".join(r) + " |" for r in rows)


def cross_check_table(doc: dict[str, Any]) -> str:
    """Black-box numbers next to the bridge's own ``latency`` transcript lines (medians, ms)."""
    head = [
        "profile",
        "transport",
        "response (black box, + think)",
        "response (bridge)",
        "barge-in (black box)",
        "barge-in (bridge)",
        "stop after event (bridge)",
        "trunc. gap (black box, signed)",
        "trunc. gap (bridge)",
    ]
    rows = [head, ["---"] * len(head)]
    think = doc["settings"].get("think_ms", 0)
    for c in doc["cells"]:
        if c["transport"] == "stock":
            continue
        rep = c.get("reported", {})

        def med(s: dict[str, Any] | None) -> str:
            return "-" if not s or not s.get("n") else f"{s['p50']:.0f}"

        resp = c["response_ms"]
        rows.append(
            [
                c["profile"],
                c["transport"],
                "-" if not resp["n"] else f"{resp['p50'] + think:.0f}",
                med(rep.get("response_ms")),
                med(c["bargein_stop_ms"]),
                med(rep.get("bargein_ms")),
                med(rep.get("stop_after_event_ms")),
                "-"
                if c.get("truncation_error_median_signed_ms") is None
                else f"{c['truncation_error_median_signed_ms']:.0f}",
                med(rep.get("truncate_gap_ms")),
            ]
        )
    return "\n".join("| " + " | ".join(r) + " |" for r in rows)


def plot(doc: dict[str, Any], out_dir: Path) -> list[Path]:
    """One PNG per metric: latency CDF per profile (subplots), one line per transport."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    profiles = list(dict.fromkeys(c["profile"] for c in doc["cells"]))
    paths = []
    for key, label in (
        ("round_trip_ms", "mouth-to-ear round trip"),
        ("bargein_stop_ms", "barge-in stop"),
        ("response_ms", "response latency (think time subtracted)"),
    ):
        cells = [c for c in doc["cells"] if c["raw"].get(key)]
        if not cells:
            continue
        fig, axes = plt.subplots(1, len(profiles), figsize=(4 * len(profiles), 3.2), squeeze=False, sharey=True)
        for ax, prof in zip(axes[0], profiles, strict=True):
            for c in cells:
                if c["profile"] != prof:
                    continue
                v = np.sort(np.asarray(c["raw"][key]))
                ax.step(v, np.arange(1, len(v) + 1) / len(v), where="post", label=c["transport"])
            ax.set_title(f"{prof}: {PROFILES[prof].describe() if prof in PROFILES else ''}", fontsize=8)
            ax.set_xlabel("ms")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        axes[0][0].set_ylabel("fraction of trials")
        fig.suptitle(f"{label}: CDF per profile", fontsize=10)
        fig.tight_layout()
        path = out_dir / f"{key.removesuffix('_ms')}_cdf.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        paths.append(path)
    return paths


def markdown(doc: dict[str, Any], plots: list[Path] | None = None, plot_prefix: str = "") -> str:
    m = doc["machine"]
    lines = [
        f"Date: {doc['date']}  ",
        f"Command: `{doc['command']}`  ",
        f"Machine: {m['nproc']} cores, {m['cpu']}, Linux {m['kernel']}, Python {m['python']}, "
        f"aiortc {m.get('aiortc', '?')}, commit {m.get('commit') or '?'}",
        "",
        "Profiles (each direction): " + "; ".join(f"**{k}** {v}" for k, v in doc.get("profiles", {}).items()) + ".",
        "",
    ]
    if doc.get("paths"):
        lines.append("Measured path (UDP echo through the forwarder, before each profile's runs):")
        lines.append("")
        for prof, p in doc["paths"].items():
            lines.append(f"- {prof}: {json.dumps(p)}")
        lines.append("")
    lines += [markdown_table(doc), ""]
    for n in doc.get("notes", []):
        lines.append(f"Note: {n}")
    errs = [f"{c['profile']}/{c['transport']}: {e}" for c in doc["cells"] for e in c.get("errors", [])]
    lines += [f"- error: {e}" for e in errs]
    lines += ["", "Cross-check against the bridge's own `latency` transcript lines (medians, ms):", ""]
    lines += [cross_check_table(doc), ""]
    lines += ["Latency budget: each stage's median and its floor (ms; bridge/bench/budget.py sets the floors):", ""]
    lines += [budget.table(doc), ""]
    for p in plots or []:
        lines.append(f"![{p.stem}]({plot_prefix}{p.name})")
    return "\n".join(lines) + "\n"


def write_all(doc: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "results.json", "md": out_dir / "results.md"}
    paths["json"].write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    try:
        pngs = plot(doc, out_dir)
    except ImportError:
        print("bench: matplotlib is not installed; no plots (pip install -e '.[bench]')", file=sys.stderr)
        pngs = []
    paths["md"].write_text(markdown(doc, pngs), encoding="utf-8")
    for p in pngs:
        paths[p.stem] = p
    return paths
