"""``python -m bridge.bench.cpu``: a real (short) measurement of ``bridge run`` in an echo call."""

from __future__ import annotations

import re

import pytest

from bridge.bench import cpu


def test_cpu_bench_measures_each_configuration(capsys: pytest.CaptureFixture[str]) -> None:
    assert cpu.main(["--seconds", "2", "--repeats", "1", "--configs", "webrtc,webrtc-aiortc-rtp"]) == 0
    out = capsys.readouterr().out
    for label in ("WebRTC", "WebRTC on aiortc's own RTP loops (BRIDGE_FAST_RTP=0)"):
        row = next(line for line in out.splitlines() if line.startswith(f"| {label} |"))
        value = float(re.split(r"\s*\|\s*", row)[2])
        assert 0.5 < value < 100  # a process in a call uses some CPU, and less than a core
