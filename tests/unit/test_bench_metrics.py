"""The lab's analysis on synthetic recordings with known latencies: onsets, gaps, trial matching."""

from __future__ import annotations

import numpy as np
import pytest

from bridge.bench import metrics, signals
from bridge.bench.signals import RATE


def _place(total_s: float, parts: list[tuple[float, float]], level: float = 0.3) -> np.ndarray:
    out = np.zeros(int(total_s * RATE), dtype=np.int16)
    for a, b in parts:
        x = signals.burst(b - a, freq=440, level=level)
        i = int(a * RATE)
        out[i : i + len(x)] = x
    return out


def test_segments_find_onsets_and_ends_to_the_millisecond() -> None:
    x = _place(3.0, [(0.25, 0.5), (1.0, 2.2)])
    segs = signals.segments(x)
    assert len(segs) == 2
    assert segs[0].start == pytest.approx(0.25, abs=0.002)
    assert segs[0].end == pytest.approx(0.5, abs=0.002)
    assert segs[1].start == pytest.approx(1.0, abs=0.002)
    assert segs[1].end == pytest.approx(2.2, abs=0.002)
    assert segs[1].gaps == 0


def test_short_dropouts_are_gaps_long_ones_split() -> None:
    x = _place(3.0, [(0.2, 1.5)])
    x[int(0.6 * RATE) : int(0.62 * RATE)] = 0  # 20 ms dropout: a gap
    x[int(1.0 * RATE) : int(1.1 * RATE)] = 0  # 100 ms: the sound stopped
    segs = signals.segments(x)
    assert [round(s.start, 2) for s in segs] == [0.2, 1.1]
    assert segs[0].gaps == 1
    assert segs[0].gap_ms == pytest.approx(20, abs=2)


def test_quiet_noise_is_not_sound() -> None:
    rng = np.random.default_rng(1)
    x = (rng.normal(0, 100, RATE)).astype(np.int16)  # ~ -50 dBFS hiss
    assert signals.segments(x) == []


def test_echo_plan_and_round_trips() -> None:
    plan = signals.echo_plan(trials=5, lead_s=2.0, spacing_s=0.5)
    assert len(plan.bursts) == 5
    assert signals.segments(plan.audio)[0].start == pytest.approx(2.0, abs=0.002)
    rtt = [0.080, 0.120, 0.095, 0.3, 0.1]
    offset = 0.0123  # the output file started 12.3 ms after the input file
    out = _place(
        plan.seconds + 1, [(a + r - offset, a + r - offset + 0.1) for (a, _), r in zip(plan.bursts, rtt, strict=True)]
    )
    out[int((plan.bursts[4][0] + 0.1 - offset) * RATE) :] = 0  # the last echo never came back
    timing = metrics.Timing(input_start_unix=1000.0, output_start_unix=1000.0 + offset, connected_unix=1001.0)
    tr = metrics.echo_trials(plan.bursts, out, timing, spacing_s=0.5)
    assert tr.round_trip_ms == pytest.approx([80, 120, 95, 300], abs=2)
    assert tr.missing == 1
    s = metrics.summary(tr.round_trip_ms)
    assert s["n"] == 4 and s["max"] == pytest.approx(300, abs=2)


def test_bursts_before_the_call_was_up_are_not_trials() -> None:
    plan = signals.echo_plan(trials=3, lead_s=1.0, spacing_s=0.5)
    out = _place(plan.seconds, [(a + 0.1, b + 0.1) for a, b in plan.bursts])
    timing = metrics.Timing(1000.0, 1000.0, connected_unix=1000.9)  # usable from 1.4 s on
    tr = metrics.echo_trials(plan.bursts, out, timing, spacing_s=0.5)
    assert tr.skipped == 1 and len(tr.round_trip_ms) == 2


def test_turn_chain_response_bargein_truncation() -> None:
    think, vad, reply_s = 200.0, 500.0, 3.0
    plan = signals.turn_plan(4, 2.0, vad_silence_ms=vad, think_ms=think, reply_s=reply_s)
    bursts = plan.bursts
    net = 0.06  # what transport + client add to a response
    stop = 0.15  # barge-in onset -> silence at the speaker
    replies = []
    for k, (_, b) in enumerate(bursts):
        start = b + (vad + think) / 1000 + net
        end = bursts[k + 1][0] + stop if k + 1 < len(bursts) else start + reply_s
        replies.append((start, end))
    out = _place(plan.seconds + 1, replies)
    timing = metrics.Timing(1000.0, 1000.0, 1001.0)
    # the server believed 30 ms more than was played for the first cut
    log = []
    for k in range(3):
        played = (replies[k][1] - replies[k][0]) * 1000
        t = 1000.0 + bursts[k + 1][0] + 0.1
        ev = {"type": "conversation.item.truncated", "item_id": f"i{k}", "audio_end_ms": int(played + 30)}
        log.append({"t": t, "dir": "out", "transport": "webrtc", "event": ev})
    tr = metrics.turn_trials(bursts, out, timing, think_ms=think, vad_silence_ms=vad, reply_s=reply_s, server_log=log)
    assert tr.response_net_ms == pytest.approx([60] * 4, abs=2)
    assert tr.response_ms == pytest.approx([560] * 4, abs=2)
    assert tr.bargein_stop_ms == pytest.approx([150] * 3, abs=2)
    assert tr.truncation_error_ms == pytest.approx([30] * 3, abs=2)
    assert tr.missing == 0 and tr.gaps == 0
    assert tr.gaps_per_min == 0


def test_a_reply_that_ended_before_the_barge_in_is_not_a_barge_in() -> None:
    plan = signals.turn_plan(2, 1.0, vad_silence_ms=500, think_ms=0, reply_s=2.0)
    (a0, b0), (a1, _) = plan.bursts
    out = _place(plan.seconds + 2, [(b0 + 0.55, a1 - 0.1)])  # short reply, over before burst 2
    tr = metrics.turn_trials(plan.bursts, out, metrics.Timing(0, 0, 0), think_ms=0, vad_silence_ms=500, reply_s=2.0)
    assert tr.bargein_stop_ms == [] and tr.skipped == 1 and tr.missing == 1


def test_reported_latency_lines() -> None:
    lines = [
        {"kind": "session"},
        {"kind": "latency", "item_id": "a", "response_ms": 612.5},
        {"kind": "latency", "item_id": "a", "stop_after_event_ms": 8.0, "bargein_ms": 140.0, "truncate_gap_ms": 12},
    ]
    r = metrics.reported_latency(lines)
    assert r == {"response_ms": [612.5], "stop_after_event_ms": [8.0], "bargein_ms": [140.0], "truncate_gap_ms": [12.0]}


def test_summary_empty_and_values() -> None:
    assert metrics.summary([])["p50"] is None
    s = metrics.summary([float(v) for v in range(1, 101)])
    assert s == {"n": 100, "p50": 50.5, "p95": 95.0, "max": 100.0}


def _ev(t: float, kind: str, **fields: object) -> dict[str, object]:
    return {"t": 1000.0 + t, "dir": "out", "transport": "webrtc", "event": {"type": kind, **fields}}


def test_turns_are_matched_through_the_server_log_and_split_into_stages() -> None:
    think, vad, reply_s, pad = 200.0, 500.0, 3.0, 300.0
    plan = signals.turn_plan(3, 2.0, vad_silence_ms=vad, think_ms=think, reply_s=reply_s)
    bursts = plan.bursts
    up, server, down, stop_down = 0.030, 0.015, 0.045, 0.040  # uplink, pacing, downlink, stop path
    log, replies = [], []
    for k, (a, b) in enumerate(bursts):
        stopped = b + vad / 1000 + 0.005  # the VAD's 10 ms frames: 5 ms past the silence
        log.append(_ev(stopped + up, "input_audio_buffer.speech_stopped", audio_end_ms=round(stopped * 1000)))
        first = stopped + up + think / 1000 + server
        log.append(_ev(first, "output_audio_buffer.started", response_id=f"r{k}"))
        if k:
            decided = a + 0.002 + 0.030  # loud from the first 10 ms frame, 30 ms of it to decide
            start_ms = round((a + 0.002) * 1000 - pad)
            log.append(_ev(decided + up, "input_audio_buffer.speech_started", audio_start_ms=start_ms))
        replies.append([first + down, None])
    for k in range(len(bursts) - 1):  # each reply stops when the next burst's speech_started has come down
        a = bursts[k + 1][0]
        replies[k][1] = a + 0.032 + up + stop_down
    replies[-1][1] = replies[-1][0] + reply_s
    out = _place(plan.seconds + 2, [(s, e) for s, e in replies])
    log.sort(key=lambda r: r["t"])
    timing = metrics.Timing(1000.0, 1000.0, 1001.0)
    tr = metrics.turn_trials(
        bursts, out, timing, think_ms=think, vad_silence_ms=vad, reply_s=reply_s, server_log=log, padding_ms=pad
    )
    assert tr.missing == 0 and len(tr.response_ms) == 3 and len(tr.bargein_stop_ms) == 2
    st = tr.stages
    assert st["downlink"] == pytest.approx([45] * 3, abs=2)
    assert st["server"] == pytest.approx([15] * 3, abs=2)
    assert st["vad_align"] == pytest.approx([5] * 3, abs=1)
    assert st["stop_path"] == pytest.approx([40] * 2, abs=2)
    assert st["vad_detect"] == pytest.approx([32] * 2, abs=1)
    assert st["uplink"] == pytest.approx([30] * 5, abs=1)  # both the end of each turn and each barge-in
    total = np.array(tr.response_net_ms)
    parts = np.array(st["vad_align"]) + np.array(st["uplink"][:3]) + np.array(st["server"]) + np.array(st["downlink"])
    assert total == pytest.approx(parts, abs=2)  # the stages add up to the response


def test_a_transport_that_falls_behind_leaves_trials_missing_not_mismatched() -> None:
    plan = signals.turn_plan(3, 2.0, vad_silence_ms=500, think_ms=200, reply_s=3.0)
    (a0, b0), (a1, b1), _ = plan.bursts
    # the server heard the first turn's end 2.5 s late and its reply lands inside the next turn's window:
    # time windows alone would call it the second turn's (fast) reply
    log = [
        _ev(b0 + 0.505 + 2.5, "input_audio_buffer.speech_stopped", audio_end_ms=round((b0 + 0.505) * 1000)),
        _ev(b0 + 0.505 + 2.7, "response.output_audio.delta", response_id="r0", delta=""),
    ]
    out = _place(plan.seconds + 4, [(b0 + 3.25, b0 + 6.0)])
    tr = metrics.turn_trials(
        plan.bursts,
        out,
        metrics.Timing(1000.0, 1000.0, 1001.0),
        think_ms=200,
        vad_silence_ms=500,
        reply_s=3.0,
        server_log=log,
    )
    assert tr.response_ms == pytest.approx([(b0 + 3.25 - b0) * 1000 - 200], abs=2)
    assert tr.missing == 2  # the server never placed the other turns' ends where the microphone had them
