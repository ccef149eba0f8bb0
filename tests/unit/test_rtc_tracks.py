"""PacedAudioTrack: deadlines, silence, live mode, bounded queue."""

from __future__ import annotations

import time

import numpy as np
import pytest

from bridge.rtc.tracks import FRAME_SAMPLES, LIVE_MAX_FRAMES, LIVE_SILENCE_AFTER, PacedAudioTrack


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


async def test_live_mode_relays_each_frame_as_it_arrives() -> None:
    """Live mode (the emulator's echo) forwards each frame when it is put, like a media relay: no 0-20 ms
    wait for a grid of its own; frames that arrive together leave together; silence only when nothing
    comes, and then on the 20 ms schedule."""
    import asyncio

    track = PacedAudioTrack(live=True)
    await track.recv()  # the first frame (silence) starts the schedule

    async def put_later(delay: float, *values: int) -> None:
        await asyncio.sleep(delay)
        for v in values:
            track.put(frame(v))

    for value, delay in ((1, 0.013), (2, 0.031), (3, 0.004)):
        task = asyncio.create_task(put_later(delay, value))
        t0 = time.monotonic()
        got = await track.recv()
        waited = time.monotonic() - t0
        await task
        assert got.to_ndarray()[0, 0] == value
        assert delay - 0.001 <= waited < delay + 0.008  # sent at arrival, not at a deadline
    track.put(frame(4))
    track.put(frame(5))  # a bunch after a stall goes out back to back
    t0 = time.monotonic()
    assert [int((await track.recv()).to_ndarray()[0, 0]) for _ in range(2)] == [4, 5]
    assert time.monotonic() - t0 < 0.005
    t0 = time.monotonic()
    silent = [await track.recv() for _ in range(3)]  # nothing comes: silence after the grace, then 20 ms apart
    elapsed = time.monotonic() - t0
    assert not any(f.to_ndarray().any() for f in silent)
    assert LIVE_SILENCE_AFTER + 0.055 <= elapsed < LIVE_SILENCE_AFTER + 0.075
    assert [f.pts for f in silent] == [FRAME_SAMPLES * k for k in range(6, 9)]  # the timestamps stay continuous
    for i in range(LIVE_MAX_FRAMES + 2):
        track.put(frame(i))
    assert track.dropped == 2 and track.queued == LIVE_MAX_FRAMES


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
