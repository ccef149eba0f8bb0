"""``bridge run`` end to end against the emulator, with ``.wav`` devices, on both transports.

The microphone is a file with tone bursts at known times; the speaker is a file that records what the
device would have played, silence included, so reply timing and barge-in are measured from the audio itself.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bridge.app.run import amain
from bridge.emulator.testing import running_emulator
from bridge.rtc.loopback import loopback_candidates
from tests.audio import read_wav, sound_spans, write_wav
from tests.helpers import run_config

# reply timing and truncation gaps are checked to tens of ms: alone
pytestmark = pytest.mark.serial

THINK_MS = 100
SILENCE_MS = 500  # bridge's session config: server VAD silence_duration_ms


def mic_offset(lines: list[dict[str, Any]]) -> float:
    """Seconds from the output file's first sample to the input file's (the transcript lines them up)."""
    return lines[0]["input_start_unix"] - lines[0]["output_start_unix"]


def transcript(tmp: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (tmp / "t.jsonl").read_text().splitlines()]


async def run_bridge(tmp: Path, monkeypatch, transport: str, duration: float, **emu: Any) -> list[dict[str, Any]]:
    async with running_emulator(think_ms=THINK_MS, behaviour="tone", **emu) as em:
        monkeypatch.setenv("OPENAI_API_KEY", em.api_key)
        with loopback_candidates():
            assert await amain(run_config(tmp, em.base_url, transport, duration)) == 0
    return transcript(tmp)


@pytest.mark.parametrize("transport", ["webrtc", "ws"])
async def test_every_turn_gets_its_own_response_time(tmp_path, monkeypatch, transport) -> None:
    """Two turns: each ``latency`` line is for that turn's reply and agrees with the output file (a WS reply
    stays the current item after it has played; the second turn must not be timed against it)."""
    write_wav(tmp_path / "in.wav", [("silence", 0.3), ("tone", 0.6), ("silence", 2.4), ("tone", 0.6), ("silence", 3)])
    lines = await run_bridge(tmp_path, monkeypatch, transport, 6.0, reply_seconds=0.8)
    out, rate = read_wav(tmp_path / "out.wav")
    starts = [start for start, _ in sound_spans(out, rate)]
    ends = [0.3 + 0.6 + mic_offset(lines), 0.3 + 0.6 + 2.4 + 0.6 + mic_offset(lines)]  # speech ends
    latency = [x for x in lines if x["kind"] == "latency" and "response_ms" in x]
    replies = [x["item_id"] for x in lines if x["kind"] == "assistant"]
    assert len(starts) == 2 and len(replies) == 2, (starts, [x["kind"] for x in lines])
    assert [x["item_id"] for x in latency] == replies
    for lat, start, end in zip(latency, starts, ends, strict=True):
        assert lat["response_ms"] == pytest.approx((start - end) * 1000, abs=50)


@pytest.mark.parametrize(("transport", "fast_rtp"), [("webrtc", "1"), ("webrtc", "0"), ("ws", "1")])
async def test_reply_arrives_in_the_output_file_at_the_right_time(tmp_path, monkeypatch, transport, fast_rtp) -> None:
    """WebRTC runs twice: on the short RTP paths (default) and on aiortc's own (BRIDGE_FAST_RTP=0)."""
    monkeypatch.setenv("BRIDGE_FAST_RTP", fast_rtp)
    write_wav(tmp_path / "in.wav", [("silence", 0.3), ("tone", 0.8), ("silence", 3.0)])
    lines = await run_bridge(tmp_path, monkeypatch, transport, 3.2, reply_seconds=1.0)

    out, rate = read_wav(tmp_path / "out.wav")
    # silence included, the file is real time: from the sink's start, through connecting, for --duration
    assert len(out) / rate == pytest.approx(3.2 + mic_offset(lines), abs=0.15)
    spans = sound_spans(out, rate)
    assert len(spans) == 1, spans
    start, end = spans[0]
    speech_end = 0.3 + 0.8 + mic_offset(lines)  # on the output file's timeline
    # reply = user speech end + VAD silence + think time + transport; the file is aligned with the mic
    assert speech_end + (SILENCE_MS + THINK_MS) / 1000 - 0.02 <= start <= speech_end + 1.0, spans
    assert end - start == pytest.approx(1.0, abs=0.1)

    kinds = [x["kind"] for x in lines]
    assert kinds[0] == "session" and lines[0]["transport"] == transport
    assert lines[0]["input_start_unix"] > 0 and lines[0]["output_start_unix"] > 0
    user = next(x for x in lines if x["kind"] == "user")
    bot = next(x for x in lines if x["kind"] == "assistant")
    assert kinds.index("user") < kinds.index("assistant")
    assert user["text"] and bot["text"]
    (lat,) = [x for x in lines if x["kind"] == "latency"]
    # the bridge's own number agrees with the audio file within 50 ms
    assert lat["response_ms"] == pytest.approx((start - speech_end) * 1000, abs=50)
    (stats,) = [x for x in lines if x["kind"] == "stats"]
    if transport == "webrtc" and fast_rtp == "1":
        assert stats["fast_rtp"]["rtp_in"] > 100 and stats["fast_rtp"]["rtp_out"] > 100
        assert stats["fast_rtp"]["uplink"] == "loop"  # a .wav microphone has no capture thread
    else:
        assert "fast_rtp" not in stats
    if transport == "webrtc":  # the emulator's receiver reports reached the FEC control: no loss here
        assert stats["uplink_loss"]["reports"] >= 1 and stats["uplink_loss"]["fec_pct"] == 0, stats


@pytest.mark.parametrize("transport", ["webrtc", "ws"])
async def test_bargein_empties_local_playback(tmp_path, monkeypatch, transport) -> None:
    # reply starts ~1.7 s; the user speaks over it at 2.6 s
    write_wav(tmp_path / "in.wav", [("silence", 0.3), ("tone", 0.8), ("silence", 1.5), ("tone", 0.6), ("silence", 3.0)])
    lines = await run_bridge(tmp_path, monkeypatch, transport, 4.4, reply_seconds=3.0)

    out, rate = read_wav(tmp_path / "out.wav")
    spans = sound_spans(out, rate)
    first_reply = spans[0]
    bargein_onset = 0.3 + 0.8 + 1.5 + mic_offset(lines)
    # the interrupted reply stopped soon after the barge-in speech began (VAD detection + one block)...
    assert bargein_onset < first_reply[1] < bargein_onset + 0.35, spans
    # ...long before its 3 s would have ended
    assert first_reply[1] - first_reply[0] < 2.0

    (cut,) = [x for x in lines if x["kind"] == "interrupted"]
    assert 0 < cut["played_ms"] < 2000
    bargein = [x for x in lines if x["kind"] == "latency" and "stop_after_event_ms" in x]
    assert bargein and bargein[0]["stop_after_event_ms"] <= 40
    if transport == "webrtc":
        assert abs(bargein[0]["truncate_gap_ms"]) <= 60  # server's idea of "heard" vs what was played
