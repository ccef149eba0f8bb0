"""The latency budget's floors and table (bridge.bench.budget)."""

from __future__ import annotations

import pytest

from bridge.bench import budget
from bridge.bench.profiles import PROFILES


def test_jitter_margin_follows_the_path() -> None:
    assert budget.jitter_margin(PROFILES["clean"]) <= budget.SLACK_GUARD_MS + 2
    wifi = budget.jitter_margin(PROFILES["wifi"])
    mobile = budget.jitter_margin(PROFILES["mobile"])
    assert 20 <= wifi <= 45 and 60 <= mobile <= 110 and wifi < mobile
    # bursts of cross traffic hold voice packets up to the 150 ms queue: NetEq's margin must cover it
    assert budget.jitter_margin(PROFILES["congested-wifi"]) >= 120


def test_floors_add_codec_tick_and_margin_to_webrtc_and_bound_a_ws_uplink_that_cannot_fit() -> None:
    path = {"udp_rtt_p50_ms": 40.0, "tcp_rtt_p50_ms": 40.0}
    rtc = budget.floors(PROFILES["wifi"], "webrtc", path, margin_ms=35.0)
    ws = budget.floors(PROFILES["wifi"], "ws", path, margin_ms=35.0)
    assert rtc["server"] - ws["server"] == budget.RTP_TICK_MS
    assert rtc["downlink"] - ws["downlink"] == pytest.approx(budget.OPUS_LOOKAHEAD_MS + 35.0, abs=1)
    assert rtc["vad_detect"] - ws["vad_detect"] == budget.OPUS_LOOKAHEAD_MS
    total_rtc, total_ws = budget.totals(rtc), budget.totals(ws)
    assert total_rtc["response_net_ms"] > total_ws["response_net_ms"]
    edge = budget.floors(PROFILES["cell-edge"], "ws", path, margin_ms=25.0)
    assert edge["uplink"] == float("inf")  # 24 kHz PCM16 as base64 needs ~565 kbit/s, the uplink has 400
    assert budget.floors(PROFILES["cell-edge"], "webrtc", path, margin_ms=25.0)["uplink"] < 40


def test_table_renders_measured_beside_floor() -> None:
    stage = {"n": 3, "p50": 12.0, "p95": 15.0, "max": 16.0}
    cell = {
        "transport": "webrtc",
        "profile": "clean",
        "stages": {k: stage for k, _ in budget.STAGES},
        "response_net_ms": stage,
        "bargein_stop_ms": stage,
        "round_trip_ms": stage,
        "client": {"held_ms_p50": 12.5, "held_ms_p95": 17.5, "target_ms": 6.0},
    }
    doc = {"settings": {"profiles": ["clean"]}, "paths": {"clean": {"udp_rtt_p50_ms": 0.3}}, "cells": [cell]}
    text = budget.table(doc)
    assert "**clean**" in text and "webrtc p50 | webrtc floor" in text
    assert text.count("| 12 |") >= len(budget.STAGES)
    assert "receive path" in text


def test_held_percentile() -> None:
    assert budget.held_percentile([0, 10, 0, 0], 50) == 7.5
    assert budget.held_percentile([], 50) is None
