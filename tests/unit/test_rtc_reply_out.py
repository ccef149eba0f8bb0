"""The emulator's ReplyOut (engine AudioOut over a paced track), driven like the track drives it."""

from __future__ import annotations

import numpy as np

from bridge.emulator.webrtc import ReplyOut


class FakeEngine:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def on_output_started(self, response_id: str) -> None:
        self.calls.append(("started", response_id))

    def on_output_stopped(self, response_id: str) -> None:
        self.calls.append(("stopped", response_id))


def pcm24(ms: int, value: int = 1000) -> bytes:
    return np.full(ms * 24, value, dtype=np.int16).tobytes()


def test_reply_is_paced_frame_by_frame_and_stopped_after_the_last_frame() -> None:
    eng = FakeEngine()
    out = ReplyOut(eng)  # type: ignore[arg-type]
    assert out.pull() is None  # nothing playing: silence
    out.begin("resp_1", "item_1")
    out.write(pcm24(50))  # 2.5 frames: generated faster than real time
    frames = [out.pull(), out.pull()]
    assert all(f is not None and len(f) == 960 for f in frames)
    assert eng.calls == [("started", "resp_1")]
    assert out.pull() is None  # underrun before end(): wait, do not send a partial frame
    out.end()
    last = out.pull()
    assert last is not None and len(last) == 480  # the track pads the short tail
    assert eng.calls == [("started", "resp_1")]  # still on the wire
    assert out.pull() is None
    assert eng.calls == [("started", "resp_1"), ("stopped", "resp_1")]
    assert out.sent_ms == 50  # the whole item went on the wire


def test_interrupt_reports_only_what_went_on_the_wire() -> None:
    eng = FakeEngine()
    out = ReplyOut(eng)  # type: ignore[arg-type]
    out.begin("resp_2", "item_2")
    out.write(pcm24(2000))
    for _ in range(37):
        assert out.pull() is not None
    assert out.interrupt() == 740
    assert out.pull() is None  # dropped the rest
    assert ("stopped", "resp_2") not in eng.calls  # cleared, not stopped: the engine reports that


def test_buffer_is_bounded_and_drops_are_counted() -> None:
    out = ReplyOut(FakeEngine(), max_seconds=1.0)  # type: ignore[arg-type]
    out.begin("resp_3", "item_3")
    out.write(pcm24(1500))
    assert out.dropped_samples == 24_000  # 0.5 s at 48 kHz
