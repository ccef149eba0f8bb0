"""CI smoke run of the latency lab: clean profile, WebRTC and WebSocket, 2 trials, real measurement.

It runs the emulator and real ``bridge run`` subprocesses in the lab's namespaces and checks that every
number came out of the audio and is sane; the full run is the documented ``bridge bench`` command.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from bridge.bench.cli import run_lab
from bridge.bench.lab import LabSettings
from bridge.bench.netem import NS_PREFIX, netns_unavailable_reason
from bridge.bench.profiles import PROFILES

REASON = netns_unavailable_reason()
pytestmark = [pytest.mark.netns, pytest.mark.timeout(150), pytest.mark.skipif(REASON is not None, reason=REASON or "")]


def test_lab_smoke_clean_webrtc_and_ws(tmp_path: Path) -> None:
    settings = LabSettings(
        transports=["webrtc", "ws"],
        profiles=[PROFILES["clean"]],
        trials=2,
        out_dir=tmp_path,
        reply_s=2.0,
        echo_spacing_s=0.6,
        stock=False,
    )
    doc, paths = run_lab(settings, "smoke")
    cells = {c["transport"]: c for c in doc["cells"]}
    assert set(cells) == {"webrtc", "ws"}
    for transport, c in cells.items():
        assert c["errors"] == [], (transport, c["errors"])
        rtt = c["round_trip_ms"]
        assert rtt["n"] == 2, (transport, c)
        assert 1 < rtt["p50"] < 1000 and rtt["max"] < 1000
        resp = c["response_net_ms"]
        assert resp["n"] >= 2 and -50 < resp["p50"] < 1000, (transport, resp)
        stop = c["bargein_stop_ms"]
        assert stop["n"] >= 1 and 0 < stop["p50"] < 1500, (transport, stop)
        assert c["truncation_error_abs_ms"]["n"] >= 1
        assert c["truncation_error_abs_ms"]["max"] < 500
        assert 0 < c["cpu_pct"] < 200 and 20 < c["rss_mb"] < 2000
        assert "response_ms" in c["reported"]  # the bridge's own latency lines were read too
        stages = c["stages"]  # the latency budget: every stage measured through the emulator's log
        for stage in ("uplink", "server", "downlink", "stop_path", "echo_back", "vad_detect", "vad_align"):
            assert stages[stage]["n"] >= 1, (transport, stage, stages)
        assert -20 < stages["uplink"]["p50"] < 200 and 0 <= stages["server"]["p50"] < 100
    assert cells["webrtc"]["client"]["held_ms_p50"] is not None  # the receive path's own share
    assert json.loads(paths["json"].read_text())["cells"]
    md = paths["md"].read_text()
    assert "| clean | webrtc |" in md and "**clean**" in md and "webrtc floor" in md
    assert paths["round_trip_cdf"].stat().st_size > 1000
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert f"{NS_PREFIX}{os.getpid()}-" not in left  # torn down
