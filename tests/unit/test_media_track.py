"""MicTrack: 20 ms s16 mono 48 kHz frames, pts in samples, paced by the source, bounded."""

from __future__ import annotations

import asyncio
import fractions
import threading
import time
from typing import Any

import av
import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError

from bridge.errors import AudioError
from bridge.media.base import AudioSource
from bridge.media.paced import PacedSource
from bridge.media.track import MicTrack


class Counting(PacedSource):
    """Frame k is filled with k + 1, so reordering or loss shows."""

    def _frame(self, index: int) -> np.ndarray:
        return np.full(960, index + 1, np.int16)


async def test_frames_are_paced_and_stamped() -> None:
    src = Counting()
    track = MicTrack(src)
    frames = [await track.recv() for _ in range(10)]
    assert src.start_mono is not None
    elapsed = time.monotonic() - src.start_mono
    assert elapsed == pytest.approx(0.2, abs=0.03)
    for k, f in enumerate(frames):
        assert f.pts == 960 * k
        assert f.sample_rate == 48_000 and f.samples == 960
        assert f.time_base == fractions.Fraction(1, 48_000)
        assert f.format.name == "s16" and f.layout.name == "mono"
        assert (f.to_ndarray() == k + 1).all()
    await track.aclose()
    with pytest.raises(MediaStreamError):
        await track.recv()


async def test_lagging_sender_drops_oldest_and_pts_follow_time() -> None:
    src = Counting()
    track = MicTrack(src, max_frames=3)
    await track.recv()
    await asyncio.sleep(0.2)  # the sender stalls for 10 frames
    f = await track.recv()
    assert track.dropped >= 5
    assert f.pts >= 960 * 7  # newest frames kept, timeline intact
    assert (f.to_ndarray() == f.pts // 960 + 1).all()
    await track.aclose()


async def test_source_failure_ends_the_track() -> None:
    class Broken(PacedSource):
        async def read_frame(self) -> tuple[np.ndarray, float]:
            raise AudioError("unplugged")

    track = MicTrack(Broken())
    with pytest.raises(MediaStreamError):
        await asyncio.wait_for(track.recv(), 2)
    await track.aclose()


async def test_with_an_encoder_recv_returns_opus_packets_on_the_source_timeline() -> None:
    """Pre-encoded packets: aiortc passes them through (no upmix, no executor hop); pts stays in samples."""
    from bridge.rtc.opus import LibopusDecoder, LibopusEncoder

    t = np.arange(960 * 3) / 48_000
    tone = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)
    frames = [tone[i * 960 : (i + 1) * 960] for i in range(3)]

    class Source(AudioSource):
        def __init__(self) -> None:
            super().__init__()
            self.frames = list(frames)

        async def start(self) -> None:
            return None

        async def read_frame(self) -> tuple[np.ndarray, float]:
            if not self.frames:
                await asyncio.Event().wait()
            return self.frames.pop(0), time.monotonic()

        async def aclose(self) -> None:
            return None

    track = MicTrack(Source(), encoder=LibopusEncoder())
    decoder = LibopusDecoder()
    try:
        packets = [await asyncio.wait_for(track.recv(), 2) for _ in range(3)]
    finally:
        track.stop()
    assert [p.pts for p in packets] == [0, 960, 1920]
    assert all(isinstance(p, av.Packet) and p.time_base == fractions.Fraction(1, 48_000) for p in packets)
    decoded = np.concatenate([decoder.decode(bytes(p)) for p in packets])
    assert len(decoded) == 2880 and np.abs(decoded[1000:]).max() > 4000  # the tone survives the round trip


async def test_a_held_track_starts_its_source_only_when_released() -> None:
    src = Counting()
    track = MicTrack(src)
    track.hold()
    pulling = asyncio.ensure_future(track.recv())
    await asyncio.sleep(0.1)  # a sender pulling for 5 frames' time gets nothing, and the mic stays closed
    assert not pulling.done() and src.start_mono is None
    released = time.monotonic()
    track.release()
    f = await asyncio.wait_for(pulling, 1)
    assert src.start_mono is not None and src.start_mono >= released - 0.001
    assert f.pts == 0 and (f.to_ndarray() == 1).all()  # the timeline starts at the release
    await track.aclose()


async def test_stopping_a_held_track_ends_its_pull() -> None:
    track = MicTrack(Counting())
    track.hold()
    pulling = asyncio.ensure_future(track.recv())
    await asyncio.sleep(0.02)
    track.stop()
    with pytest.raises(MediaStreamError):
        await asyncio.wait_for(pulling, 1)
    await track.aclose()


class ThreadMic(AudioSource):
    """A source with a capture thread of its own, as DeviceSource has (PortAudio's): frame k is k + 1."""

    has_capture_thread = True

    def __init__(self) -> None:
        super().__init__()
        self.started = False
        self.consumer: Any = None
        self.failed = asyncio.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def capture_to(self, consumer: Any) -> None:
        self.consumer = consumer

    async def start(self) -> None:  # idempotent, as DeviceSource.start is
        if not self.started:
            self.started = True
            self._thread.start()

    def _run(self) -> None:
        k = 0
        while not self._stop.wait(0.005):
            consumer = self.consumer
            if consumer is not None:
                consumer(np.full(960, k + 1, np.int16), time.monotonic())
            k += 1

    async def read_frame(self) -> tuple[np.ndarray, float]:  # capture mode queues nothing: only the end
        await self.failed.wait()
        raise AudioError("unplugged")

    async def aclose(self) -> None:
        self._stop.set()
        if self.started:
            self._thread.join(1)


async def test_capture_hands_frames_over_in_the_sources_thread_after_the_release() -> None:
    src = ThreadMic()
    track = MicTrack(src)
    track.hold()
    got: list[tuple[int, int, int]] = []  # (index, frame value, thread)

    def send(pcm: np.ndarray, index: int) -> None:
        got.append((index, int(pcm[0]), threading.get_ident()))

    capturing = asyncio.ensure_future(track.capture(send))
    await asyncio.sleep(0.05)
    assert not src.started and not got  # held: the microphone stays closed
    await src.start()  # someone else opens it while the track is held: still nothing is sent
    await asyncio.sleep(0.05)
    assert not got
    track.release()
    deadline = time.monotonic() + 2
    while len(got) < 10:
        assert time.monotonic() < deadline, "no frames from the capture thread"
        await asyncio.sleep(0.005)
    assert [i for i, _, _ in got[:10]] == list(range(10))  # the timeline starts at the release, one per frame
    first = got[0][1]
    assert [v for _, v, _ in got[:10]] == list(range(first, first + 10))  # every frame, in order
    assert {t for _, _, t in got} == {src._thread.ident} != {threading.get_ident()}
    assert track.frames_sent >= 10
    track.stop()
    with pytest.raises(MediaStreamError):
        await asyncio.wait_for(capturing, 1)
    assert src.consumer is None  # handed back: nothing more is sent after the end
    await src.aclose()


async def test_capture_ends_when_the_source_fails() -> None:
    src = ThreadMic()
    track = MicTrack(src)
    capturing = asyncio.ensure_future(track.capture(lambda pcm, index: None))
    await asyncio.sleep(0.05)
    src.failed.set()
    with pytest.raises(MediaStreamError):
        await asyncio.wait_for(capturing, 1)
    assert src.consumer is None
    await track.aclose()
    await src.aclose()


async def test_capture_declines_a_source_without_a_capture_thread() -> None:
    track = MicTrack(Counting())
    assert await asyncio.wait_for(track.capture(lambda pcm, index: None), 1) is False
    pcm, index = await track.next_frame()  # the loop path still works
    assert index == 0 and (pcm == 1).all()
    await track.aclose()
