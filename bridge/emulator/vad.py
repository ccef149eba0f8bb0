"""Energy-based server VAD (PROTOCOL.md 4.7), pure: bytes in, speech start/stop events out.

Threshold mapping: the API's ``threshold`` (0..1, default 0.5, "higher = needs louder audio") maps
linearly to an RMS level in dBFS per 10 ms frame: ``dbfs = -70 + 60 * threshold``. So 0.5 -> -40 dBFS
(ordinary speech at a sane mic gain is -30..-15 dBFS; room noise below -50), 0 -> -70 dBFS (anything but
digital silence), 1.0 -> -10 dBFS (shouting). Speech starts after ``MIN_SPEECH_MS`` of consecutive loud
frames, and ends after ``silence_duration_ms`` of quiet frames.

Timeline (PROTOCOL.md 4.4): ms since the first audio written to the session's input buffer.
``audio_start_ms`` = start of the first loud frame minus ``prefix_padding_ms`` (not below the last commit);
``audio_end_ms`` = end of the last loud frame plus ``silence_duration_ms`` (i.e. when it was detected).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bridge.protocol.pcm import BYTES_PER_MS

FRAME_MS = 10
FRAME_BYTES = FRAME_MS * BYTES_PER_MS
MIN_SPEECH_MS = 30


def threshold_dbfs(threshold: float) -> float:
    """The frame RMS level (dBFS) that counts as speech for an API ``threshold`` in 0..1."""
    return -70.0 + 60.0 * min(1.0, max(0.0, threshold))


@dataclass(frozen=True)
class SpeechStarted:
    audio_start_ms: int


@dataclass(frozen=True)
class SpeechStopped:
    audio_end_ms: int


VadEvent = SpeechStarted | SpeechStopped


class ServerVad:
    """Feed it PCM16 24 kHz mono in any chunk sizes; it returns the events each chunk completes."""

    def __init__(
        self, threshold: float = 0.5, prefix_padding_ms: int = 300, silence_duration_ms: int = 200, start_ms: int = 0
    ) -> None:
        self.level_dbfs = threshold_dbfs(threshold)
        self._level_linear = 32768.0 * 10 ** (self.level_dbfs / 20.0)
        self.prefix_padding_ms = prefix_padding_ms
        self.silence_duration_ms = silence_duration_ms
        self._pending = b""
        self._pos_ms = start_ms  # end of the last complete frame on the input timeline
        self._floor_ms = start_ms  # speech cannot start before this (the last commit / stop)
        self.speaking = False
        self._loud_run_ms = 0
        self._loud_start_ms = 0
        self._quiet_run_ms = 0

    @property
    def position_ms(self) -> int:
        return self._pos_ms

    def reset_floor(self, ms: int) -> None:
        """Audio before ``ms`` was committed or cleared: padding must not reach back past it."""
        self._floor_ms = max(self._floor_ms, ms)

    def configure(self, threshold: float, prefix_padding_ms: int, silence_duration_ms: int) -> None:
        """Apply a ``session.update`` without losing the timeline."""
        self.level_dbfs = threshold_dbfs(threshold)
        self._level_linear = 32768.0 * 10 ** (self.level_dbfs / 20.0)
        self.prefix_padding_ms = prefix_padding_ms
        self.silence_duration_ms = silence_duration_ms

    def process(self, pcm: bytes) -> list[VadEvent]:
        data = self._pending + pcm
        n = len(data) // FRAME_BYTES
        self._pending = data[n * FRAME_BYTES :]
        if n == 0:
            return []
        frames = np.frombuffer(data[: n * FRAME_BYTES], dtype="<i2").reshape(n, -1).astype(np.float64)
        rms = np.sqrt(np.mean(frames * frames, axis=1))
        events: list[VadEvent] = []
        for level in rms:
            start = self._pos_ms
            self._pos_ms += FRAME_MS
            loud = level >= self._level_linear
            if not self.speaking:
                if loud:
                    if self._loud_run_ms == 0:
                        self._loud_start_ms = start
                    self._loud_run_ms += FRAME_MS
                    if self._loud_run_ms >= MIN_SPEECH_MS:
                        self.speaking = True
                        self._quiet_run_ms = 0
                        begin = max(self._floor_ms, self._loud_start_ms - self.prefix_padding_ms)
                        events.append(SpeechStarted(begin))
                else:
                    self._loud_run_ms = 0
            elif loud:
                self._quiet_run_ms = 0
            else:
                self._quiet_run_ms += FRAME_MS
                if self._quiet_run_ms >= self.silence_duration_ms:
                    self.speaking = False
                    self._loud_run_ms = 0
                    self._floor_ms = self._pos_ms
                    events.append(SpeechStopped(self._pos_ms))
        return events
