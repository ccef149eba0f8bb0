"""``python -m bridge.bench.cpu``: a real (short) measurement of ``bridge run`` in an echo call."""

from __future__ import annotations

import re
import statistics

import pytest

from bridge.bench import cpu

try:
    from tests.pulse import Pulse, pulse  # noqa: F401
except ModuleNotFoundError:  # plain `pytest` puts tests/ (the conftest's dir), not the repo, on sys.path
    from pulse import Pulse, pulse  # type: ignore[no-redef]  # noqa: F401


def test_cpu_bench_measures_each_configuration(capsys: pytest.CaptureFixture[str]) -> None:
    assert cpu.main(["--seconds", "2", "--settle", "1", "--repeats", "1", "--configs", "webrtc,webrtc-aiortc-rtp"]) == 0
    out = capsys.readouterr().out
    for label in ("WebRTC", "WebRTC on aiortc's own RTP loops (BRIDGE_FAST_RTP=0)"):
        row = next(line for line in out.splitlines() if line.startswith(f"| {label} |"))
        value = float(re.split(r"\s*\|\s*", row)[2])
        assert 0.5 < value < 100  # a process in a call uses some CPU, and less than a core


@pytest.mark.pulseaudio
@pytest.mark.timeout(180)
def test_cpu_bench_on_devices_pairs_each_run_with_the_sound_stacks_floor(
    pulse: Pulse,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ["--seconds", "2", "--settle", "1", "--repeats", "2", "--input", "default", "--output", "default"]
    assert cpu.main([*args, "--configs", "webrtc,floor", "--threads"]) == 0
    out = capsys.readouterr().out
    floor_row = next(line for line in out.splitlines() if line.startswith("| PortAudio + PulseAudio alone"))
    floor_runs = [float(v) for v in re.split(r"\s*\|\s*", floor_row)[3].split(", ")]
    rows = [line for line in out.splitlines() if line.startswith("| WebRTC |")]
    assert len(rows) == 3  # its CPU, its own share, its threads
    runs = [float(v) for v in re.split(r"\s*\|\s*", rows[0])[3].split(", ")]
    own_runs = [float(v) for v in re.split(r"\s*\|\s*", rows[1])[3].split(", ")]
    assert len(floor_runs) == len(runs) == len(own_runs) == 2 and all(f > 0 for f in floor_runs)
    assert own_runs == pytest.approx([w - f for w, f in zip(runs, floor_runs, strict=True)], abs=0.11)
    # per thread: the loop, and PortAudio's two callback threads under the names the bridge gives them
    threads = dict(cell.rsplit(" ", 1) for cell in re.split(r"\s*\|\s*", rows[2])[2].split(", "))
    assert {"loop", "bridge-mic", "bridge-speaker"} <= set(threads), threads
    assert sum(float(v) for v in threads.values()) == pytest.approx(statistics.median(runs), abs=1.5)
