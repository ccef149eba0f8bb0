"""The session's input audio buffer and server VAD on one timeline (PROTOCOL.md 4.4, 4.7), pure: no events.

Timeline: ms since the first audio written to the session's input buffer. ``_start_ms`` is the timeline
position of the buffer's first byte; commits, clears and VAD segments advance it. The engine turns what
:meth:`InputAudio.feed` returns into ``input_audio_buffer.*`` events.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bridge.emulator.vad import ServerVad, SpeechStarted, SpeechStopped
from bridge.protocol.pcm import BYTES_PER_MS

MIN_COMMIT_MS = 100  # PROTOCOL.md 6
SEMANTIC_VAD_KNOBS = (0.5, 300, 500)  # semantic_vad has no knobs: "auto" eagerness as a longer pause


@dataclass(frozen=True)
class Segment:
    """A VAD turn that ended: its audio, [start_ms, end_ms) on the input timeline."""

    start_ms: int
    end_ms: int
    pcm: bytes


class InputAudio:
    """The input buffer plus the VAD (None when ``turn_detection`` is null)."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._start_ms = 0.0  # input timeline position of _buffer[0]
        self._vad: ServerVad | None = None
        self._speech_start_ms = 0

    @property
    def vad_on(self) -> bool:
        return self._vad is not None

    @property
    def speaking(self) -> bool:
        return self._vad is not None and self._vad.speaking

    @property
    def buffered_ms(self) -> float:
        return len(self._buffer) / BYTES_PER_MS

    @property
    def position_ms(self) -> int:
        """The input timeline position of the end of the buffer."""
        return int(self._start_ms + len(self._buffer) / BYTES_PER_MS)

    def configure(self, turn_detection: dict[str, Any] | None) -> None:
        """Apply the session's ``audio.input.turn_detection`` without losing the timeline."""
        if turn_detection is None:
            self._vad = None
            return
        threshold = float(turn_detection.get("threshold", 0.5))
        padding = int(turn_detection.get("prefix_padding_ms", 300))
        silence = int(turn_detection.get("silence_duration_ms", 200))
        if turn_detection.get("type") == "semantic_vad":
            threshold, padding, silence = SEMANTIC_VAD_KNOBS
        if self._vad is None:
            # A VAD turned on mid-session starts at the current input position.
            self._vad = ServerVad(threshold, padding, silence, start_ms=self.position_ms)
        else:
            self._vad.configure(threshold, padding, silence)

    def feed(self, pcm24: bytes) -> list[SpeechStarted | Segment]:
        """Append user audio; returns the speech starts and the finished turns it completes, in order."""
        self._buffer.extend(pcm24)
        if self._vad is None:
            return []
        out: list[SpeechStarted | Segment] = []
        for ev in self._vad.process(pcm24):
            if isinstance(ev, SpeechStarted):
                self._speech_start_ms = ev.audio_start_ms
                out.append(ev)
            elif isinstance(ev, SpeechStopped):
                pcm = self._take_segment(self._speech_start_ms, ev.audio_end_ms)
                out.append(Segment(self._speech_start_ms, ev.audio_end_ms, pcm))
        return out

    def take_all(self) -> bytes:
        """Commit: everything buffered leaves the buffer (a turn in progress ends with it)."""
        pcm = bytes(self._buffer)
        self._advance(len(pcm))
        if self._vad is not None:
            self._vad.speaking = False
        return pcm

    def clear(self) -> None:
        self._advance(len(self._buffer))
        if self._vad is not None:
            self._vad.speaking = False

    def take_until(self, end_ms: int) -> bytes:
        """The buffered audio before ``end_ms`` (an idle timeout's empty turn), removed from the buffer."""
        return self._take_segment(int(self._start_ms), end_ms)

    def _advance(self, nbytes: int) -> None:
        del self._buffer[:nbytes]
        self._start_ms += nbytes / BYTES_PER_MS
        if self._vad is not None:
            self._vad.reset_floor(int(self._start_ms))

    def _take_segment(self, start_ms: int, end_ms: int) -> bytes:
        """Audio [start_ms, end_ms) of the input timeline; everything before end_ms leaves the buffer."""
        start = max(0, int((start_ms - self._start_ms) * BYTES_PER_MS) // 2 * 2)
        end = max(0, int((end_ms - self._start_ms) * BYTES_PER_MS) // 2 * 2)
        pcm = bytes(self._buffer[start:end])
        self._advance(min(end, len(self._buffer)))
        return pcm
