"""Pre-roll ring and connect-time backlog: order, thread safety, no allocation per frame, and a drain that
never drops speech."""

from __future__ import annotations

import threading
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.errors import ConfigError
from bridge.kiosk.preroll import Backlog, DrainSettings, Frame, FrameRing, PreRoll

N = 960


def frame(i: int) -> np.ndarray:
    """A frame that says which one it is."""
    return np.full(N, i % 30000, dtype=np.int16)


def test_ring_is_fifo_and_overwrites_the_oldest() -> None:
    r = FrameRing(3)
    for i in range(5):
        r.push(frame(i), i * 0.02, i % 2 == 0)
    assert len(r) == 3 and r.overwritten == 2
    got = [r.pop() for _ in range(3)]
    assert [int(f.pcm[0]) for f in got] == [2, 3, 4]
    assert [f.speech for f in got] == [True, False, True]
    with pytest.raises(IndexError):
        r.pop()
    with pytest.raises(ValueError):
        r.push(np.zeros(10, dtype=np.int16), 0, False)


def test_preroll_keeps_the_last_seconds_and_takes_from_a_time() -> None:
    p = PreRoll(0.5)  # 25 frames
    for i in range(100):
        p.push(frame(i), (i + 1) * 0.02, False)
    assert len(p) == 25
    got = p.take(since=1.8)  # frames ending after 1.8 s: i + 1 > 90
    assert [int(f.pcm[0]) for f in got] == list(range(90, 100))
    assert len(p) == 0
    with pytest.raises(ConfigError):
        PreRoll(0)


def test_preroll_push_allocates_nothing_per_frame() -> None:
    p = PreRoll(0.8)
    pcm = frame(7)
    for i in range(100):  # warm up
        p.push(pcm, i * 0.02, True)
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for i in range(5000):
        p.push(pcm, i * 0.02, i % 3 == 0)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(s.size_diff for s in after.compare_to(before, "filename") if "preroll" in str(s.traceback))
    assert grown < 1024  # 5000 pushes: no per-frame allocation left behind


def test_preroll_is_safe_between_a_capture_thread_and_the_loop() -> None:
    p = PreRoll(1.0)
    stop = threading.Event()
    taken: list[Frame] = []

    def capture() -> None:
        for i in range(20000):
            p.push(frame(i), float(i), False)
        stop.set()

    t = threading.Thread(target=capture)
    t.start()
    while not stop.is_set():
        taken.extend(p.take(since=-1))
    t.join()
    taken.extend(p.take(since=-1))
    idx = [int(f.captured) for f in taken]
    assert idx == sorted(idx) and len(set(idx)) == len(idx)
    assert all(int(f.pcm[0]) == int(f.captured) % 30000 and (f.pcm == f.pcm[0]).all() for f in taken)
    assert idx[-1] == 19999


def test_start_backlog_takes_the_ring_from_a_time_and_routes_later_frames() -> None:
    p = PreRoll(0.5)
    for i in range(100):
        p.push(frame(i), (i + 1) * 0.02, False)
    b = p.start_backlog(since=1.8)
    for i in range(100, 105):
        p.push(frame(i), (i + 1) * 0.02, True)
    p.stop_backlog()
    p.push(frame(105), 106 * 0.02, False)
    assert [int(f.pcm[0]) for f in b.take_all()] == list(range(90, 105))
    assert [int(f.pcm[0]) for f in p.take(0)] == [105]


def test_switching_to_the_backlog_and_back_loses_and_doubles_nothing() -> None:
    p = PreRoll(1.0)
    opened, closed = threading.Event(), threading.Event()
    at_start, at_stop, last = 1000, 5000, 5030

    def capture() -> None:
        for i in range(last):
            p.push(frame(i), float(i), False)
            if i == at_start:
                opened.set()
            if i == at_stop:
                closed.set()

    t = threading.Thread(target=capture)
    t.start()
    assert opened.wait(10)
    backlog = p.start_backlog(-1.0, DrainSettings(max_backlog_s=200))  # races the capture thread
    assert p.backlog is backlog
    with pytest.raises(RuntimeError):
        p.start_backlog(-1.0)
    assert closed.wait(10)
    p.stop_backlog()  # races it too
    t.join()
    held = [int(f.captured) for f in backlog.take_all()]
    ring = [int(f.captured) for f in p.take(-1.0)]
    assert at_start - 50 <= held[0] and held[-1] >= at_stop  # from the ring's oldest frame at the switch
    assert held == list(range(held[0], held[-1] + 1))  # contiguous: nothing lost, nothing twice
    assert ring == list(range(held[-1] + 1, last))  # the ring picks up exactly where the backlog stopped
    assert p.backlog is None


def test_websocket_drain_takes_everything_at_once() -> None:
    b = Backlog(frames=[Frame(frame(i), i * 0.02, True) for i in range(10)])
    for i in range(10, 60):
        b.push(frame(i), i * 0.02, i % 4 == 0)
    assert b.lag_s == pytest.approx(1.2)
    got = b.take_all()
    assert [int(f.pcm[0]) for f in got] == list(range(60))
    assert len(b) == 0 and b.lag_s == 0 and b.next_paced() is None


def run_paced(flags: list[bool], preroll: int, guard_ms: int = 200) -> tuple[list[int], int, dict[int, int]]:
    """Seed ``preroll`` frames, then one live frame per tick and one paced send per tick (the WebRTC
    uplink). Returns the indices sent, the tick at which the backlog emptied (-1: never), and for each
    dropped frame the newest frame pushed when it was dropped."""
    b = Backlog(DrainSettings(guard_ms=guard_ms), [Frame(frame(i), i * 0.02, flags[i]) for i in range(preroll)])
    sent: list[int] = []
    dropped: dict[int, int] = {}
    drained_at = -1

    def send(f: Frame, newest: int) -> None:
        k = int(f.pcm[0])
        dropped.update({j: newest for j in range(sent[-1] + 1 if sent else 0, k)})
        sent.append(k)

    for i in range(preroll, len(flags)):
        if drained_at < 0:
            b.push(frame(i), i * 0.02, flags[i])
            f = b.next_paced()
            assert f is not None
            send(f, i)
            if len(b) == 0:
                drained_at = i
        else:
            sent.append(i)  # live again: frames go straight out
    if drained_at < 0:
        while (f := b.next_paced()) is not None:
            send(f, len(flags) - 1)
    return sent, drained_at, dropped


def test_webrtc_drain_skips_pauses_but_sends_every_word() -> None:
    # 0.3 s lead, "Hello" 0.5 s, a 1 s pause, "where is the cafe" 1.2 s, then silence; call up at 1.5 s
    flags = [False] * 15 + [True] * 25 + [False] * 50 + [True] * 60 + [False] * 150
    sent, drained_at, _ = run_paced(flags, preroll=75)
    speech = [i for i, s in enumerate(flags) if s]
    assert [i for i in sent if flags[i]] == speech  # every speech frame, in order
    # the 1 s pause shrank to 2 x 200 ms; the 0.3 s lead to the 200 ms guard
    end_first, second = speech[24], speech[25]
    assert sum(1 for i in sent if end_first < i < second) == 20
    assert sum(1 for i in sent if i < speech[0]) == 10
    # the 1.5 s backlog lost 0.1 s of lead and 0.6 s of pause: 0.8 s of speech is still queued when the
    # last word is spoken (speech is never dropped, and RTP cannot go faster); then the 200 ms guard, and
    # the trailing silence goes: live again 51 ticks after the last word
    assert drained_at - speech[-1] == 40 + 10 + 1


@given(st.lists(st.booleans(), min_size=1, max_size=300), st.integers(0, 100), st.sampled_from([20, 100, 200]))
@settings(max_examples=200, deadline=None)
def test_webrtc_drain_never_drops_speech_or_its_guard(flags: list[bool], preroll: int, guard_ms: int) -> None:
    preroll = min(preroll, len(flags))
    sent, _, dropped = run_paced(flags, preroll, guard_ms)
    assert sent == sorted(sent) and len(set(sent)) == len(sent)
    assert set(sent) | set(dropped) == set(range(len(flags)))
    guard = guard_ms // 20
    for j, newest in dropped.items():
        assert not flags[j]  # speech is never dropped
        assert not any(flags[max(0, j - guard) : j])  # nor the guard after speech
        # nor the guard before speech that was already known when the frame was dropped
        assert not any(flags[j + 1 : min(j + guard, newest) + 1]), (j, newest)


def test_backlog_is_bounded_and_counts_what_it_lost() -> None:
    b = Backlog(DrainSettings(max_backlog_s=0.2))
    for i in range(15):
        b.push(frame(i), i * 0.02, True)
    assert len(b) == 10 and b.overflowed == 5
    assert int(b.take_all()[0].pcm[0]) == 5
