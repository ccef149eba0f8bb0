"""PacedAudioTrack: deadlines, silence, live mode, bounded queue."""

from __future__ import annotations

import time

import numpy as np
import pytest

from bridge.rtc.tracks import FRAME_SAMPLES, LIVE_TRIM_AFTER, PacedAudioTrack


def frame(value: int) -> np.ndarray:
    return np.full(FRAME_SAMPLES, value, dtype=np.int16)


async def test_frames_follow_monotonic_deadlines_without_drift() -> None:
    track = PacedAudioTrack()
    t0 = time.monotonic()
    frames = [await track.recv() for _ in range(26)]
    elapsed = time.monotonic() - t0
    assert [f.pts for f in frames] == [i * FRAME_SAMPLES for i in range(26)]
    assert all(f.samples == FRAME_SAMPLES and f.sample_rate == 48_000 for f in frames)
    assert all(f.layout.name == "mono" and f.format.name == "s16" for f in frames)
    assert 0.49 <= elapsed < 0.56  # 25 intervals of 20 ms, no accumulated drift
    assert track.silent_frames == 26
    assert not frames[3].to_ndarray().any()


async def test_live_mode_sends_at_next_deadline_and_trims_a_standing_frame() -> None:
    track = PacedAudioTrack(live=True)
    await track.recv()
    track.put(frame(1))
    assert (await track.recv()).to_ndarray()[0, 0] == 1  # sent at the next deadline
    assert not (await track.recv()).to_ndarray().any()  # nothing queued -> silence
    track.put(frame(2))
    track.put(frame(3))  # jitter: two in one interval are both kept
    track.put(frame(4))  # a third drops the oldest
    assert track.dropped == 1
    got = []
    for i in range(5, 5 + LIVE_TRIM_AFTER + 2):  # one frame per deadline, one standing behind
        got.append(int((await track.recv()).to_ndarray()[0, 0]))
        track.put(frame(i))
    assert track.dropped == 2  # the standing extra frame was trimmed once
    assert got[:3] == [3, 4, 5]
    assert track.queued == 1


async def test_queue_is_bounded_and_pull_is_called_at_the_deadline() -> None:
    calls: list[float] = []

    def pull() -> np.ndarray | None:
        calls.append(time.monotonic())
        return frame(7)[:500]  # a short final chunk is padded

    track = PacedAudioTrack(pull, max_frames=3)
    for i in range(5):
        track.put(frame(i))
    assert track.dropped == 2 and track.queued == 3
    got = [int((await track.recv()).to_ndarray()[0, 0]) for _ in range(4)]
    assert got == [2, 3, 4, 7]
    assert len(calls) == 1
    last = await track.recv()
    assert last.samples == FRAME_SAMPLES and last.to_ndarray()[0, 600] == 0
    assert track.clear() == 0


async def test_wrong_frame_size_is_rejected_and_stop_ends_the_track() -> None:
    track = PacedAudioTrack()
    with pytest.raises(ValueError):
        track.put(np.zeros(100, dtype=np.int16))
    track.stop()
    from aiortc.mediastreams import MediaStreamError

    with pytest.raises(MediaStreamError):
        await track.recv()
