"""Energy VAD: start/stop times on the input timeline, padding, silence, threshold, chunking."""

from __future__ import annotations

import numpy as np
import pytest

from bridge.emulator.vad import ServerVad, SpeechStarted, SpeechStopped, threshold_dbfs

RATE = 24_000


def tone(ms: int, dbfs: float = -20.0) -> bytes:
    t = np.arange(int(RATE * ms / 1000)) / RATE
    amp = 10 ** (dbfs / 20) * np.sqrt(2)  # sine RMS = amp / sqrt(2)
    return (amp * np.sin(2 * np.pi * 300 * t) * 32767).astype(np.int16).tobytes()


def silence(ms: int) -> bytes:
    return bytes(int(RATE * ms / 1000) * 2)


def run(vad: ServerVad, pcm: bytes, chunk: int = 960) -> list[object]:
    events: list[object] = []
    for i in range(0, len(pcm), chunk):
        events += vad.process(pcm[i : i + chunk])
    return events


def test_threshold_mapping_is_monotonic_and_documented() -> None:
    assert threshold_dbfs(0.0) == -70.0
    assert threshold_dbfs(0.5) == -40.0
    assert threshold_dbfs(1.0) == -10.0


def test_burst_gives_start_with_padding_and_stop_with_silence() -> None:
    vad = ServerVad(threshold=0.5, prefix_padding_ms=300, silence_duration_ms=200)
    events = run(vad, silence(1000) + tone(700) + silence(600))
    # speech begins at 1000 ms; padding reaches back 300 ms; it ends at 1700 + 200 ms of silence
    assert events == [SpeechStarted(700), SpeechStopped(1900)]


def test_padding_never_reaches_before_timeline_start() -> None:
    vad = ServerVad(prefix_padding_ms=300)
    events = run(vad, silence(100) + tone(300) + silence(300))
    assert events[0] == SpeechStarted(0)


def test_short_pause_does_not_end_turn() -> None:
    vad = ServerVad(silence_duration_ms=500)
    events = run(vad, tone(400) + silence(300) + tone(400) + silence(600))
    assert [type(e) for e in events] == [SpeechStarted, SpeechStopped]
    assert events[1] == SpeechStopped(400 + 300 + 400 + 500)


def test_quiet_sound_below_threshold_is_ignored_and_high_threshold_needs_loud_audio() -> None:
    assert run(ServerVad(threshold=0.5), tone(500, dbfs=-50) + silence(400)) == []
    assert run(ServerVad(threshold=0.9), tone(500, dbfs=-25) + silence(400)) == []
    assert len(run(ServerVad(threshold=0.1), tone(500, dbfs=-50) + silence(400))) == 2


def test_click_shorter_than_min_speech_is_ignored() -> None:
    assert run(ServerVad(), silence(200) + tone(20) + silence(500)) == []


@pytest.mark.parametrize("chunk", [2, 480, 4800, 48_000])
def test_chunking_does_not_change_results(chunk: int) -> None:
    pcm = silence(500) + tone(600) + silence(400) + tone(300) + silence(400)
    assert run(ServerVad(), pcm, chunk) == run(ServerVad(), pcm, 960)


def test_two_turns_and_floor_after_stop() -> None:
    vad = ServerVad(prefix_padding_ms=300, silence_duration_ms=200)
    events = run(vad, tone(500) + silence(250) + tone(500) + silence(300))
    assert events[:2] == [SpeechStarted(0), SpeechStopped(700)]
    # the second start may not reach back into the first turn (floor = 750 ms frame boundary after stop)
    assert isinstance(events[2], SpeechStarted) and events[2].audio_start_ms >= 700


def test_start_ms_offsets_the_timeline() -> None:
    vad = ServerVad(prefix_padding_ms=0, start_ms=5000)
    events = run(vad, tone(300) + silence(300))
    assert events == [SpeechStarted(5000), SpeechStopped(5500)]
