"""``bridge devices``: the audio devices ``--input`` / ``--output`` can name, as a readable table."""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from bridge.errors import AudioError
from bridge.media.aec_engine import INSTALL_HINT, describe_engine
from bridge.media.portaudio import DeviceInfo, list_devices


def format_table(devices: list[DeviceInfo]) -> str:
    """One row per device: index, default marks (``>`` input, ``<`` output), name, host API, rate, channels."""
    header = ("", "#", "name", "host API", "rate", "in", "out")
    rows = [header]
    for d in devices:
        marks = (">" if d.default_input else " ") + ("<" if d.default_output else " ")
        rows.append(
            (
                marks,
                str(d.index),
                d.name,
                d.hostapi,
                f"{d.default_samplerate:g}",
                str(d.max_input_channels),
                str(d.max_output_channels),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    right = {1, 4, 5, 6}
    lines = [
        "  ".join(cell.rjust(widths[i]) if i in right else cell.ljust(widths[i]) for i, cell in enumerate(r)).rstrip()
        for r in rows
    ]
    lines.append("> default input   < default output   (use the index or a unique part of the name)")
    return "\n".join(lines)


def main(args: argparse.Namespace | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    try:
        devices = list_devices()
    except AudioError as exc:
        print(f"bridge devices: error: {exc}", file=sys.stderr)
        return 1
    if not devices:
        print("no audio devices found (.wav files and null still work)", file=out)
        return 0
    inputs = sum(1 for d in devices if d.max_input_channels)
    outputs = sum(1 for d in devices if d.max_output_channels)
    print(format_table(devices), file=out)
    print(f"{inputs} input and {outputs} output devices", file=out)
    print(echo_line(), file=out)
    return 0


def echo_line() -> str:
    """Whether ``bridge run`` cancels echo (``--aec auto``) and with which engine."""
    engine = describe_engine()
    if engine is None:
        return f"echo cancellation: not installed ({INSTALL_HINT}); --aec auto runs without it"
    return f"echo cancellation: {engine}, on when --input and --output are sound cards (--aec auto)"
