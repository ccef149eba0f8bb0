"""WebSocket barge-in, exactly (issue #4): properties over random interrupt times, chunk sizes and delivery
speeds, against the emulator, measured from the recorded output file; and the naive client for contrast.

Per trial: the user speaks (tone), the emulator answers with a 2 s tone delivered faster than real time in
``chunk_ms`` deltas, the user speaks again ``interrupt_s`` into the reply.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from bridge.app.run import amain
from bridge.emulator.testing import running_emulator
from tests.audio import read_wav, sound_spans, sounding_seconds, write_wav
from tests.helpers import run_config

pytestmark = pytest.mark.serial  # what was played is checked to within 20 ms: alone, not beside other tests

BLOCK_S = 0.010  # the sink's block
FADE_S = 0.005
WINDOW_S = 0.005  # sound_spans resolution
REPLY_START_S = 0.2 + 0.4 + 0.5 + 0.05  # speech end + VAD silence + think (input timeline)


async def trial(tmp: Path, monkeypatch, interrupt_s: float, chunk_ms: int, speed: float, mode: str) -> dict[str, Any]:
    bargein_at = REPLY_START_S + interrupt_s
    write_wav(
        tmp / "in.wav",
        [("silence", 0.2), ("tone", 0.4), ("silence", bargein_at - 0.6), ("tone", 0.5), ("silence", 4.0)],
    )
    async with running_emulator(think_ms=50, reply_seconds=2.0, chunk_ms=chunk_ms, speed=speed) as emu:
        monkeypatch.setenv("OPENAI_API_KEY", emu.api_key)
        duration = bargein_at + (2.8 if mode == "naive" else 0.8)
        assert await amain(run_config(tmp, emu.base_url, "ws", duration, bargein=mode)) == 0
        sent = [r["event"] for r in emu.log_events() if r["dir"] == "in"]
        errors = [e for e in emu.server_events() if e.get("type") == "error"]
    lines = [json.loads(x) for x in (tmp / "t.jsonl").read_text().splitlines()]
    out, rate = read_wav(tmp / "out.wav")
    head = lines[0]
    (lat,) = [x for x in lines if x["kind"] == "latency" and "speech_started_unix" in x]
    spans = sound_spans(out, rate, window_ms=WINDOW_S * 1000)
    return {
        "spans": spans,
        # what the speaker really sounded of the reply: underruns (a reply streamed at 1x) leave short gaps
        "played_s": sounding_seconds(out, rate, spans[0], window_ms=WINDOW_S * 1000) if spans else 0.0,
        "speech_started": lat["speech_started_unix"] - head["output_start_unix"],  # output-file time
        "truncates": [e for e in sent if e.get("type") == "conversation.item.truncate"],
        "errors": errors,
        "lines": lines,
    }


@settings(
    max_examples=6,
    deadline=None,
    derandomize=True,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    interrupt_s=st.floats(min_value=0.15, max_value=1.5),
    chunk_ms=st.sampled_from([20, 40, 80, 160, 320]),
    speed=st.floats(min_value=1.0, max_value=8.0),
)
async def test_truncate_matches_what_was_played(tmp_path_factory, monkeypatch, interrupt_s, chunk_ms, speed) -> None:
    tmp = tmp_path_factory.mktemp("bargein")
    r = await trial(tmp, monkeypatch, interrupt_s, chunk_ms, speed, "exact")
    reply_start, reply_end = r["spans"][0]
    # nothing of the reply sounds later than one block plus the fade after speech_started arrived
    assert reply_end <= r["speech_started"] + BLOCK_S + FADE_S + WINDOW_S, r["spans"]
    # the server is told what was truly played, within one block, and never more than it sent
    (truncate,) = r["truncates"]
    played_ms = r["played_s"] * 1000
    assert played_ms <= (reply_end - reply_start) * 1000 + 1e-6
    assert isinstance(truncate["audio_end_ms"], int)
    assert abs(truncate["audio_end_ms"] - played_ms) <= (BLOCK_S + FADE_S + WINDOW_S) * 1000, (truncate, played_ms)
    assert truncate["audio_end_ms"] <= 2000
    assert r["errors"] == []  # in particular, never a truncate error
    (cut,) = [x for x in r["lines"] if x["kind"] == "interrupted"]
    assert cut["played_ms"] == pytest.approx(played_ms, abs=20)


async def test_naive_client_keeps_talking_for_seconds(tmp_path, monkeypatch) -> None:
    """The same barge-in with a plain client (no flush, no truncate): stale audio measured in seconds."""
    (tmp_path / "exact").mkdir()
    (tmp_path / "naive").mkdir()
    exact = await trial(tmp_path / "exact", monkeypatch, 0.5, 80, 4.0, "exact")
    naive = await trial(tmp_path / "naive", monkeypatch, 0.5, 80, 4.0, "naive")
    stale_exact = exact["spans"][0][1] - exact["speech_started"]
    stale_naive = naive["spans"][0][1] - naive["speech_started"]
    print(f"stale audio after speech_started: exact {stale_exact * 1000:.0f} ms, naive {stale_naive * 1000:.0f} ms")
    assert stale_exact <= BLOCK_S + FADE_S + WINDOW_S
    assert stale_naive >= 1.0  # it plays everything it had buffered (2 s reply at 4x, 0.5 s in)
    assert naive["truncates"] == []
