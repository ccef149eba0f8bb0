"""The station's microphone routing (MicRouter) and a connection's WebRTC uplink track (MicTrack): 20 ms
s16 mono 48 kHz frames, pts on the source's timeline, bounded, held until released, in the capture thread
when there is one. Paced sources run on a virtual clock: timing is exact, not measured."""

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
from bridge.media.clock import VirtualClock
from bridge.media.mic import LoudnessTap, MicRouter, routed
from bridge.media.paced import PacedSource
from bridge.media.track import MicTrack
from bridge.media.uplink import Uplink
from tests.helpers import until


class Counting(PacedSource):
    """Frame k is filled with k + 1, so reordering or loss shows."""

    def _frame(self, index: int) -> np.ndarray:
        return np.full(960, index + 1, np.int16)


async def test_frames_are_paced_and_stamped() -> None:
    clock = VirtualClock()
    src = Counting(clock=clock)
    track = MicTrack()
    async with routed(src, track):
        assert src.start_mono is not None
        await clock.advance_to(src.start_mono + 0.1 - 1e-6)
        assert len(track._queue) == 4  # one frame per 20 ms of the source's clock, none early
        await clock.advance_to(src.start_mono + 0.1)
        assert len(track._queue) == 5
        frames = [await track.recv() for _ in range(5)]
        await clock.advance(0.1)
        frames += [await track.recv() for _ in range(5)]
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
    clock = VirtualClock()
    track = MicTrack(max_frames=3)
    src = Counting(clock=clock)
    async with routed(src, track):
        assert src.start_mono is not None
        await clock.advance_to(src.start_mono + 0.2)  # ten frames while the sender stalls
        f = await track.recv()
    assert track.dropped == 7
    assert f.pts == 960 * 7  # the newest frames are kept, the timeline intact
    assert (f.to_ndarray() == 8).all()
    await track.aclose()


async def test_frames_the_source_skipped_leave_a_gap_on_the_timeline() -> None:
    """A paced source that fell behind skips ahead (counted); the track's indices jump with it."""
    clock = VirtualClock()
    src = Counting(clock=clock, max_lag_ms=100)
    track = MicTrack(max_frames=50)
    router = MicRouter(src)
    await router.start()
    router.attach(track)
    assert src.start_mono is not None
    clock.t = src.start_mono + 0.02  # frame 0 is due
    pcm, captured = await src.read_frame()
    router._on_loop(pcm, captured, True)
    clock.t += 0.3  # the loop stalled for 300 ms
    pcm, captured = await src.read_frame()
    router._on_loop(pcm, captured, True)
    first, second = await track.next_frame(), await track.next_frame()
    assert first[1] == 0 and second[1] == second[0][0] - 1 > 10 and src.dropped == second[1] - 1
    await track.aclose()


async def test_a_failing_source_ends_the_routers_run() -> None:
    class Broken(PacedSource):
        async def read_frame(self) -> tuple[np.ndarray, float]:
            raise AudioError("unplugged")

    router = MicRouter(Broken())
    await router.start()
    with pytest.raises(AudioError, match="unplugged"):
        await asyncio.wait_for(router.run(), 2)


async def test_with_an_encoder_recv_returns_opus_packets_on_the_source_timeline() -> None:
    """Pre-encoded packets: aiortc passes them through (no upmix, no executor hop); pts stays in samples."""
    from bridge.rtc.opus import LibopusDecoder, LibopusEncoder

    t = np.arange(960 * 3) / 48_000
    tone = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)
    track = MicTrack(encoder=LibopusEncoder())
    for k in range(3):
        track.send_frame(tone[k * 960 : (k + 1) * 960], 100.0 + 0.02 * k)
    decoder = LibopusDecoder()
    packets = [await asyncio.wait_for(track.recv(), 2) for _ in range(3)]
    track.stop()
    assert [p.pts for p in packets] == [0, 960, 1920]
    assert all(isinstance(p, av.Packet) and p.time_base == fractions.Fraction(1, 48_000) for p in packets)
    decoded = np.concatenate([decoder.decode(bytes(p)) for p in packets])
    assert len(decoded) == 2880 and np.abs(decoded[1000:]).max() > 4000  # the tone survives the round trip


async def test_a_held_track_drops_frames_until_released_and_its_timeline_starts_there() -> None:
    clock = VirtualClock()
    firsts: list[float] = []
    track = MicTrack(on_first_frame=firsts.append)
    track.hold()
    src = Counting(clock=clock)
    async with routed(src, track):
        assert src.start_mono is not None
        pulling = asyncio.ensure_future(track.recv())
        await clock.advance_to(src.start_mono + 0.1)  # five frames' time: the sender gets nothing
        assert not pulling.done() and track.held_dropped == 5 and not firsts
        track.release()
        await clock.advance(0.02)
        f = await asyncio.wait_for(pulling, 1)
    assert f.pts == 0 and (f.to_ndarray() == 6).all()  # the timeline starts at the release
    assert src.start_mono is not None
    assert firsts == [pytest.approx(src.start_mono + 0.1)]  # frame 5's first sample: the server's origin
    await track.aclose()


async def test_stopping_a_held_track_ends_its_pull() -> None:
    track = MicTrack()
    track.hold()
    pulling = asyncio.ensure_future(track.recv())
    await asyncio.sleep(0)
    track.stop()
    with pytest.raises(MediaStreamError):
        await asyncio.wait_for(pulling, 1)


async def test_a_paused_track_sends_silence_on_the_same_timeline() -> None:
    track = MicTrack()
    track.send_frame(np.full(960, 7, np.int16), 1.00)
    track.pause(True)
    track.send_frame(np.full(960, 7, np.int16), 1.02)
    track.pause(False)
    track.send_frame(np.full(960, 7, np.int16), 1.04)
    got = [await track.next_frame() for _ in range(3)]
    assert [i for _, i in got] == [0, 1, 2]
    assert [int(np.abs(p).max()) for p, _ in got] == [7, 0, 7]


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
    track = MicTrack(capture_thread=True)
    track.hold()
    got: list[tuple[int, int, int]] = []  # (index, frame value, thread)

    def send(pcm: np.ndarray, index: int) -> None:
        got.append((index, int(pcm[0]), threading.get_ident()))

    async with routed(src, track) as router:
        capturing = asyncio.ensure_future(track.capture(send))
        await until(lambda: track.held_dropped >= 3, "frames while held")
        assert not got  # held: nothing is sent
        track.release()
        await until(lambda: len(got) >= 10, "frames from the capture thread", 2)
        assert [i for i, _, _ in got[:10]] == list(range(10))  # the timeline starts at the release
        first = got[0][1]
        assert [v for _, v, _ in got[:10]] == list(range(first, first + 10))  # every frame, in order
        assert {t for _, _, t in got} == {src._thread.ident} != {threading.get_ident()}
        assert track.frames_sent >= 10 and track.thread_safe
        track.stop()
        with pytest.raises(MediaStreamError):
            await asyncio.wait_for(capturing, 1)
        sent = len(got)
        before = router.frames
        await until(lambda: router.frames >= before + 3, "more frames captured")
        assert len(got) == sent and not track.thread_safe  # handed back: nothing more is sent


async def test_capture_declines_without_a_capture_thread() -> None:
    track = MicTrack(capture_thread=False)
    assert await asyncio.wait_for(track.capture(lambda pcm, index: None), 1) is False
    track.send_frame(np.full(960, 1, np.int16), 5.0)  # the loop path still works
    pcm, index = await track.next_frame()
    assert index == 0 and (pcm == 1).all()
    await track.aclose()


class Collect(Uplink):
    """A loop-only uplink that records the thread each frame arrives in."""

    def __init__(self) -> None:
        self.frames: list[tuple[int, int]] = []

    def send_frame(self, pcm: np.ndarray, captured: float) -> None:
        self.frames.append((int(pcm[0]), threading.get_ident()))

    def pause(self, paused: bool) -> None:
        raise AssertionError("not used here")


async def test_router_hops_to_the_loop_for_an_uplink_that_is_not_thread_safe_and_counts_unrouted() -> None:
    src = ThreadMic()
    router = MicRouter(src)
    await router.start()
    try:
        await until(lambda: router.unrouted >= 3, "frames with nothing attached")
        first, second = Collect(), Collect()
        router.attach(first)
        await until(lambda: len(first.frames) >= 3, "frames on the loop")
        assert {t for _, t in first.frames} == {threading.get_ident()}
        router.attach(second)  # a new connection takes over: the old one gets nothing more
        await until(lambda: len(second.frames) >= 3, "frames for the new uplink")
        n = len(first.frames)
        await until(lambda: len(second.frames) >= 6, "more frames")
        assert len(first.frames) == n  # nothing more for the old one
        values = [v for v, _ in first.frames + second.frames]
        assert values == sorted(values) and len(set(values)) == len(values)  # in order, none twice
    finally:
        await router.aclose()


def test_the_loudness_tap_notes_frames_above_its_level_only() -> None:
    tap = LoudnessTap(threshold_dbfs=-45.0)
    assert tap.quiet_for(5.0) == float("inf")
    t = np.arange(960) / 48_000

    def at_db(db: float) -> np.ndarray:  # a sine whose RMS is ``db`` dBFS (its peak is RMS * sqrt 2)
        return (32767 * 10 ** (db / 20) * np.sqrt(2) * np.sin(2 * np.pi * 440 * t)).astype(np.int16)

    tap(at_db(-50.0), 1.0)  # below the level
    tap(np.zeros(960, dtype=np.int16), 1.5)
    assert tap.quiet_for(2.0) == float("inf")
    tap(at_db(-40.0), 2.0)
    assert tap.quiet_for(2.75) == pytest.approx(0.75)
    tap(at_db(-50.0), 3.0)
    assert tap.last_loud == 2.0
    tap(np.zeros(0, dtype=np.int16), 4.0)  # an empty frame is quiet, not an error
    assert tap.last_loud == 2.0
