"""AudioReceiver: real Opus packets, synthetic network, fake clock; plus the aiortc seam guard."""

from __future__ import annotations

import asyncio

import aiortc
import numpy as np
import pytest
from aiortc.jitterbuffer import JitterBuffer

from bridge.rtc import opus
from bridge.rtc.receiver import JITTER_ATTR, TESTED_AIORTC, AudioReceiver, FrameInfo, check_seam
from bridge.rtc.testing import FakeClock, opus_packets, rtp_stream, tone

F = 0.020


@pytest.fixture(scope="module")
def payloads() -> list[bytes]:
    return opus_packets(tone(2.0, 440.0))


class Sink:
    def __init__(self) -> None:
        self.frames: list[np.ndarray] = []
        self.infos: list[FrameInfo] = []


def make(clock: FakeClock, decoder: str = "libopus") -> tuple[AudioReceiver, Sink]:
    sink = Sink()
    rx = AudioReceiver(sink.frames.append, clock=clock, decoder=decoder, observer=sink.infos.append)
    return rx, sink


def feed_all(rx: AudioReceiver, clock: FakeClock, packets: list, arrivals: list[float]) -> None:
    order = sorted(range(len(packets)), key=lambda i: arrivals[i])
    for i in order:
        while True:  # fire the hole timer at its deadline, as the event loop would
            d = rx._window.deadline
            if d is None or d > arrivals[i]:
                break
            clock.t = d
            rx.poll()
        clock.t = arrivals[i]
        rx.feed(packets[i])
    clock.advance(1.0)
    rx.poll()


def test_clean_stream_decodes_every_frame_without_added_delay(payloads: list[bytes]) -> None:
    clock = FakeClock()
    rx, sink = make(clock)
    pk = list(rtp_stream(payloads))
    feed_all(rx, clock, pk, [clock.t + i * F for i in range(len(pk))])
    assert len(sink.frames) == len(payloads)
    assert all(f.dtype == np.int16 and f.shape == (960,) for f in sink.frames)
    assert max(rx.delays_ms) == 0.0
    # 440 Hz at -10 dBFS comes out as audio, not silence.
    assert np.abs(np.concatenate(sink.frames[5:])).max() > 5000
    assert rx.stats.decoder == "libopus"


@pytest.mark.parametrize("decoder", ["libopus", "av"])
def test_loss_is_concealed_one_frame_per_lost_packet(payloads: list[bytes], decoder: str) -> None:
    clock = FakeClock()
    rx, sink = make(clock, decoder)
    pk = list(rtp_stream(payloads))
    lost = {10, 11, 40, 70}
    keep = [p for i, p in enumerate(pk) if i not in lost]
    arr = [clock.t + i * F for i, p in enumerate(pk) if i not in lost]
    feed_all(rx, clock, keep, arr)
    assert len(sink.frames) == len(payloads)  # concealment keeps the timeline whole
    assert rx.stats.concealed == 4 and rx.stats.window.lost == 4
    concealed = [i for i, info in enumerate(sink.infos) if info.concealed]
    assert concealed == sorted(lost)
    if decoder == "libopus":  # PLC continues the tone instead of dropping to silence
        assert np.abs(sink.frames[40]).max() > 1000
    assert max(rx.delays_ms) <= 20.0 + 1e-6


def test_reorder_duplicates_and_wraparound(payloads: list[bytes]) -> None:
    clock = FakeClock()
    rx, sink = make(clock)
    pk = list(rtp_stream(payloads[:60], seq0=65500, ts0=(1 << 32) - 960 * 30))
    arrivals = [clock.t + i * F for i in range(len(pk))]
    arrivals[20], arrivals[21] = arrivals[21], arrivals[20] + 0.005  # 21 before 20
    pk = pk + [pk[30], pk[31]]  # duplicates arriving later
    arrivals += [arrivals[31] + 0.003, arrivals[31] + 0.004]
    feed_all(rx, clock, pk, arrivals)
    ts = [i.rtp_timestamp for i in sink.infos]
    assert ts == [p.timestamp for p in pk[:60]]
    st = rx.stats
    assert (st.reordered, st.duplicates, st.concealed, st.late_dropped) == (1, 2, 0, 0)


def test_burst_then_recovery_has_no_lasting_delay(payloads: list[bytes]) -> None:
    clock = FakeClock()
    rx, sink = make(clock)
    pk = list(rtp_stream(payloads))
    keep = [i for i in range(len(pk)) if not 20 <= i < 35]
    feed_all(rx, clock, [pk[i] for i in keep], [clock.t + i * F for i in keep])
    # 15 lost: 5 concealed, 10 skipped; everything after the burst is released on arrival.
    assert rx.stats.concealed == 5 and rx.stats.window.skipped == 10
    after = [i for i in sink.infos if i.rtp_timestamp is not None and i.rtp_timestamp >= 40 * 960]
    assert after and all(i.delivered_at == i.ready_at for i in after)


def test_callback_errors_are_counted_not_raised(payloads: list[bytes]) -> None:
    clock = FakeClock()

    def boom(_: np.ndarray) -> None:
        raise ValueError("consumer bug")

    rx = AudioReceiver(boom, clock=clock)
    for p in rtp_stream(payloads[:3]):
        rx.feed(p)
    assert rx.stats.callback_errors == 3


async def test_hole_timer_fires_on_the_event_loop(payloads: list[bytes]) -> None:
    """With a real loop the receiver gives up on a hole by itself (no later packet needed)."""
    frames: list[np.ndarray] = []
    three = asyncio.Event()

    def on_audio(frame: np.ndarray) -> None:
        frames.append(frame)
        if len(frames) >= 3:
            three.set()

    rx = AudioReceiver(on_audio)
    pk = list(rtp_stream(payloads[:5]))
    rx.feed(pk[0])
    rx.feed(pk[2])  # 1 missing, nothing else arrives
    assert len(frames) == 1
    async with asyncio.timeout(1.0):
        await three.wait()
    assert rx.stats.concealed == 1
    rx.close()


def test_seam_guard_matches_installed_aiortc() -> None:
    """If this fails after an aiortc upgrade, AudioReceiver.attach would not see packets: fix the seam."""
    assert aiortc.__version__.startswith(TESTED_AIORTC), aiortc.__version__
    check_seam()
    from aiortc.rtcdtlstransport import RTCCertificate, RTCDtlsTransport
    from aiortc.rtcicetransport import RTCIceGatherer, RTCIceTransport
    from aiortc.rtcrtpreceiver import RTCRtpReceiver

    async def build() -> None:
        dtls = RTCDtlsTransport(RTCIceTransport(RTCIceGatherer()), [RTCCertificate.generateCertificate()])
        receiver = RTCRtpReceiver("audio", dtls)
        assert isinstance(getattr(receiver, JITTER_ATTR), JitterBuffer)
        rx = AudioReceiver(lambda _: None)
        rx.attach(receiver)
        assert not isinstance(getattr(receiver, JITTER_ATTR), JitterBuffer)
        rx.close()
        assert isinstance(getattr(receiver, JITTER_ATTR), JitterBuffer)

    asyncio.run(build())


def test_libopus_plc_and_fec_calls(payloads: list[bytes]) -> None:
    dec = opus.LibopusDecoder()
    assert len(dec.decode(payloads[0])) == 960
    assert len(dec.conceal(960)) == 960
    assert len(dec.conceal(1920, payloads[3])) == 1920  # PLC + FEC attempt from the next packet
    assert len(dec.decode(b"\xff\xff\xff")) == 0 and dec.errors == 1
    dec.close()


class FakePlayout:
    """The playout side of ``AudioReceiver.follow``: records arrivals, says when it would run dry."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.arrivals: list[tuple[float, float | None]] = []
        self.dry_at: float | None = None
        self.streams = 0

    def new_stream(self) -> None:
        self.streams += 1

    def arrival(self, media_s: float, at: float | None = None) -> None:
        self.arrivals.append((media_s, at))

    def ms_until_dry(self) -> float | None:
        return None if self.dry_at is None else (self.dry_at - self.clock.t) * 1000


def test_follow_reports_arrivals_and_conceals_when_the_playout_needs_it(payloads: list[bytes]) -> None:
    from bridge.rtc.receiver import NEED_GUARD_MS

    clock = FakeClock()
    playout = FakePlayout(clock)
    sink = Sink()

    def on_audio(frame: np.ndarray) -> None:  # each frame handed to the playout covers 20 ms more
        sink.frames.append(frame)
        if playout.dry_at is not None:
            playout.dry_at += F

    rx = AudioReceiver(on_audio, clock=clock, observer=sink.infos.append)
    rx.follow(playout)
    assert playout.streams == 1  # following starts the playout's view of a new stream (its own jitter)
    pk = list(rtp_stream(payloads, seq0=65534, ts0=(1 << 32) - 960))  # both counters wrap
    t0 = clock.t
    for i in range(3):
        clock.t = t0 + i * F
        rx.feed(pk[i])
    assert [round(m, 3) for m, _ in playout.arrivals] == [0.0, 0.02, 0.04]  # media time, unwrapped
    assert len(sink.frames) == 3 and rx.deadline is None  # nothing playing yet: nothing to conceal for
    playout.dry_at = t0 + 0.065  # packet 3 is due at 0.060; the device would run short at 0.065
    assert rx.deadline == pytest.approx(t0 + 0.065 - NEED_GUARD_MS / 1000)
    clock.t = t0 + 0.061
    rx.poll()
    assert len(sink.frames) == 3  # still 4 ms to go: wait
    clock.t = rx.deadline
    rx.poll()
    assert len(sink.frames) == 4 and sink.infos[-1].concealed  # concealed in time, not silence
    assert rx.stats.window.covered == 1  # one frame was enough: the device now has until 0.085
    assert playout.dry_at == pytest.approx(t0 + 0.085)
    clock.t = t0 + 0.07
    rx.feed(pk[3])  # it came late: played after the concealment
    assert len(sink.frames) == 5 and not sink.infos[-1].concealed
    assert rx.stats.window.covered_late == 1 and rx.stats.late_dropped == 0
    playout.dry_at = clock.t - 0.030  # a stall of the loop: the device is 30 ms short already
    rx.poll()
    assert rx.stats.window.covered == 3  # two more frames at once, as many as it takes


def test_fec_wait_counts_a_lost_frame_as_arriving_with_the_next_packet(payloads: list[bytes]) -> None:
    clock = FakeClock()
    rx, sink = make(clock)
    playout = FakePlayout(clock)
    rx.follow(playout, fec_wait=True)
    pk = list(rtp_stream(payloads))
    t0 = clock.t
    for i in (0, 1, 3):  # 2 is lost
        clock.t = t0 + i * F
        rx.feed(pk[i])
    assert len(sink.frames) == 4 and sink.infos[2].concealed and rx.stats.fec_frames == 1
    media = [round(m, 3) for m, _ in playout.arrivals]
    assert media == [0.0, 0.02, 0.06, 0.04]  # frame 2 "arrived" (as FEC) with packet 3
    assert playout.arrivals[-1][1] == pytest.approx(t0 + 3 * F)
