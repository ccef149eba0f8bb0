"""Keep the first words: a pre-roll ring of the last moments of microphone audio, and the backlog that
holds everything spoken while a call connects and then drains back to live.

The visitor starts talking before the VAD is sure (~240 ms, docs/kiosk.md) and long before a call exists
(minting a key and connecting take hundreds of ms). So:

- :class:`PreRoll` is always filled from the capture thread with every 20 ms frame and its VAD verdict
  (``speech``); it holds the last ``seconds`` (default 0.8 s) in preallocated memory (no allocation per
  frame: one ``np.copyto`` into a slot, under a lock held for microseconds).
- On a VAD onset the kiosk opens a :class:`Backlog` with :meth:`PreRoll.start_backlog`
  (``since = onset.speech_from - lead_s``): it holds the ring's frames from there on, and every later
  :meth:`PreRoll.push` goes into it until :meth:`PreRoll.stop_backlog` (an atomic switch: no frame is lost
  or doubled between the ring and the backlog).
- When the call is up, the uplink drains the backlog:

  * **WebSocket** (:meth:`Backlog.take_all`): audio may be appended faster than real time (the server
    timestamps input by sample count, not arrival), so everything held goes out at once and the next
    frame is live again: latency is back to normal as soon as the append is on the wire.
  * **WebRTC** (:meth:`Backlog.next_paced`): RTP is paced at real time (one 20 ms frame per 20 ms), so
    the uplink sends exactly one frame per tick, and catches up only by *not sending silence*: before
    each send, frames at the head that are non-speech and at least ``guard_ms`` away from any speech on
    both sides are dropped. Speech is never dropped, pauses between words keep up to ``2 * guard_ms``
    (400 ms by default, under the server VAD's 500 ms ``silence_duration_ms``, so no turn ends early).
    Near the live edge the future is unknown: silence there is dropped when every frame after it up to
    the newest is silence too, and the newest frame is always sent, so once the visitor pauses the backlog
    empties and the uplink is live again. Because that decision leans on the VAD's flag for the newest
    frames, flag backlog frames with the gate's lower ``release`` threshold
    (``speech = verdict.probability >= settings.release``) so a soft word onset counts as speech.
    The backlog therefore drains at the speed of the visitor's own pauses; how long that takes for typical
    onsets is measured by ``python -m bridge.bench.backlog`` (docs/kiosk.md "Catching up").

Thread model: :meth:`PreRoll.push` is called from the capture thread; :meth:`Backlog.next_paced` from the
thread that sends RTP (the same capture thread with the fast path, or the event loop);
:meth:`PreRoll.start_backlog` / :meth:`PreRoll.stop_backlog` / :meth:`Backlog.take_all` from the event loop.
Every method takes one short lock, so any mix is safe.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np

from bridge.errors import ConfigError

FRAME_MS = 20
FRAME_SAMPLES = 960


@dataclass(frozen=True)
class Frame:
    pcm: np.ndarray
    """960 int16 samples (48 kHz mono); a copy owned by the receiver."""
    captured: float
    """Monotonic time the frame's last sample was captured."""
    speech: bool
    """The local VAD's verdict for this frame (:attr:`bridge.kiosk.vad.Verdict.speech`)."""


class FrameRing:
    """A fixed-capacity FIFO of 20 ms frames in preallocated arrays. Not locked itself: the owners below
    hold their lock around every call."""

    def __init__(self, capacity: int, frame_samples: int = FRAME_SAMPLES) -> None:
        if capacity < 1:
            raise ConfigError("a frame ring needs room for at least one frame")
        self.capacity = capacity
        self.frame_samples = frame_samples
        self._pcm = np.zeros((capacity, frame_samples), dtype=np.int16)
        self._captured = np.zeros(capacity, dtype=np.float64)
        self._speech = np.zeros(capacity, dtype=np.bool_)
        self._head = 0  # index of the oldest frame
        self._len = 0
        self.overwritten = 0
        """Frames lost because the ring was full (the oldest go)."""

    def __len__(self) -> int:
        return self._len

    def push(self, pcm: np.ndarray, captured: float, speech: bool) -> None:
        if len(pcm) != self.frame_samples:
            raise ValueError(f"expected {self.frame_samples} samples, got {len(pcm)}")
        if self._len == self.capacity:
            self._head = (self._head + 1) % self.capacity
            self._len -= 1
            self.overwritten += 1
        slot = (self._head + self._len) % self.capacity
        np.copyto(self._pcm[slot], pcm, casting="unsafe")
        self._captured[slot] = captured
        self._speech[slot] = speech
        self._len += 1

    def speech_at(self, i: int) -> bool:
        """The speech flag of the ``i``-th oldest frame."""
        return bool(self._speech[(self._head + i) % self.capacity])

    def captured_at(self, i: int) -> float:
        return float(self._captured[(self._head + i) % self.capacity])

    def pop(self) -> Frame:
        if not self._len:
            raise IndexError("empty ring")
        slot = self._head
        frame = Frame(self._pcm[slot].copy(), float(self._captured[slot]), bool(self._speech[slot]))
        self.drop()
        return frame

    def drop(self) -> None:
        """Forget the oldest frame."""
        self._head = (self._head + 1) % self.capacity
        self._len -= 1

    def clear(self) -> None:
        self._head = 0
        self._len = 0


class PreRoll:
    """The last ``seconds`` of microphone frames, and the switch that routes frames into a :class:`Backlog`
    (see module docstring). The capture thread always calls :meth:`push`; the loop calls
    :meth:`start_backlog` on a wake and :meth:`stop_backlog` when the backlog has drained or the call ended.
    The switch is atomic: no frame is lost or delivered twice between the ring and the backlog."""

    def __init__(self, seconds: float = 0.8) -> None:
        if not 0 < seconds <= 5:
            raise ConfigError("pre-roll must be between 0 and 5 seconds")
        self.seconds = seconds
        self._ring = FrameRing(math.ceil(seconds * 1000 / FRAME_MS))
        self._lock = threading.Lock()
        self._backlog: Backlog | None = None

    def __len__(self) -> int:
        return len(self._ring)

    @property
    def backlog(self) -> Backlog | None:
        """The backlog frames are routed to, if one is open."""
        return self._backlog

    def push(self, pcm: np.ndarray, captured: float, speech: bool) -> None:
        """Every captured frame (capture thread): into the ring (the oldest frame makes room once it is
        full), or into the open backlog."""
        with self._lock:
            backlog = self._backlog
            if backlog is None:
                self._ring.push(pcm, captured, speech)
                return
        backlog.push(pcm, captured, speech)  # its own lock; pushes come from one thread, so order holds

    def take(self, since: float) -> list[Frame]:
        """Frames with any sample captured after ``since`` (oldest first), removed from the ring."""
        with self._lock:
            return self._take(since)

    def start_backlog(self, since: float, settings: DrainSettings | None = None) -> Backlog:
        """Open a backlog holding the ring's frames after ``since`` (usually ``onset.speech_from -
        settings.lead_s``); every later :meth:`push` goes to it until :meth:`stop_backlog`."""
        with self._lock:
            if self._backlog is not None:
                raise RuntimeError("a backlog is already open")
            self._backlog = Backlog(settings, self._take(since))
            return self._backlog

    def stop_backlog(self) -> None:
        """Route frames to the ring again (the backlog drained, or the call ended)."""
        with self._lock:
            self._backlog = None

    def _take(self, since: float) -> list[Frame]:
        out: list[Frame] = []
        while len(self._ring):
            if self._ring.captured_at(0) > since:  # the frame ends after ``since``
                out.append(self._ring.pop())
            else:
                self._ring.drop()
        return out


@dataclass(frozen=True)
class DrainSettings:
    guard_ms: int = 200
    """Non-speech kept on each side of speech (word edges, the VAD's own timing error)."""
    max_backlog_s: float = 20.0
    """Hard bound on the audio held while connecting (older audio is dropped and counted)."""
    lead_s: float = 0.3
    """Pre-roll kept before the onset's ``speech_from``."""

    def __post_init__(self) -> None:
        if self.guard_ms < FRAME_MS or self.max_backlog_s <= 0 or self.lead_s < 0:
            raise ConfigError("drain settings need guard_ms >= 20, max_backlog_s > 0 and lead_s >= 0")


class Backlog:
    """Audio held from the pre-roll on while a call connects, drained by the uplink (module docstring)."""

    def __init__(self, settings: DrainSettings | None = None, frames: list[Frame] | None = None) -> None:
        self.settings = s = settings or DrainSettings()
        self._ring = FrameRing(math.ceil(s.max_backlog_s * 1000 / FRAME_MS))
        self._guard = math.ceil(s.guard_ms / FRAME_MS)
        self._since_speech = self._guard  # frames since the last speech frame left the head
        self._lock = threading.Lock()
        self.pushed = 0
        self.sent = 0
        self.dropped_silence = 0
        for f in frames or []:
            self._ring.push(f.pcm, f.captured, f.speech)
            self.pushed += 1

    def __len__(self) -> int:
        return len(self._ring)

    @property
    def lag_s(self) -> float:
        """How far behind live the next frame to send is."""
        return len(self._ring) * FRAME_MS / 1000

    @property
    def overflowed(self) -> int:
        """Frames lost because the backlog hit ``max_backlog_s`` (the connect took far too long)."""
        return self._ring.overwritten

    def push(self, pcm: np.ndarray, captured: float, speech: bool) -> None:
        """A live frame (capture thread), until the backlog has drained."""
        with self._lock:
            self._ring.push(pcm, captured, speech)
            self.pushed += 1

    def take_all(self) -> list[Frame]:
        """WebSocket: everything held, oldest first (send it at once; then go live)."""
        with self._lock:
            out = [self._ring.pop() for _ in range(len(self._ring))]
            self.sent += len(out)
            return out

    def next_paced(self) -> Frame | None:
        """WebRTC: the one frame to send this tick, after dropping droppable silence at the head; None when
        the backlog is empty (send live audio directly from then on)."""
        with self._lock:
            ring = self._ring
            while len(ring) > 1 and self._droppable_head():
                ring.drop()
                self.dropped_silence += 1
                self._since_speech += 1
            if not len(ring):
                return None
            frame = ring.pop()
            self._since_speech = 0 if frame.speech else self._since_speech + 1
            self.sent += 1
            return frame

    def _droppable_head(self) -> bool:
        """Non-speech, ``guard`` frames after the last speech sent, and followed by non-speech for
        ``guard`` frames or up to the live edge (whose newest frame is always sent)."""
        ring, guard = self._ring, self._guard
        if ring.speech_at(0) or self._since_speech < guard:
            return False
        return not any(ring.speech_at(i) for i in range(1, min(guard, len(ring) - 1) + 1))
