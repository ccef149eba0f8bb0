"""``.wav`` devices (issue #3): a file plays like a microphone; a file records what a speaker played.

``WavSource`` decodes the whole file at ``start`` (any format FFmpeg reads, resampled and downmixed to
48 kHz mono int16 by PyAV; 48 kHz mono int16 is passed through bit-exact), then serves it in real time
and silence after the end. ``WavSink`` writes every pulled block, silence included, so sample ``n`` of
the file is ``n / 48000`` s after ``start_unix``; the header is rewritten with each write (``wave``
patches it) and the file is flushed every ``flush_every_s`` so a crash loses little.
"""

from __future__ import annotations

import asyncio
import logging
import wave
from pathlib import Path
from typing import BinaryIO

import numpy as np

from bridge.errors import AudioError
from bridge.media.base import FRAME_SAMPLES, RATE, SINK_BLOCK_SAMPLES, silence
from bridge.media.clock import REAL_CLOCK, Clock
from bridge.media.paced import PacedSink, PacedSource

log = logging.getLogger(__name__)


def load_wav(path: str | Path) -> np.ndarray:
    """Decode an audio file to 48 kHz mono int16 (blocking; call off the event loop for big files)."""
    import av  # local: PyAV is heavy and only needed here

    try:
        container = av.open(str(path))
    except (OSError, av.FFmpegError) as exc:
        raise AudioError(f"cannot read audio file {path}: {exc}") from exc
    parts: list[np.ndarray] = []
    with container:
        if not container.streams.audio:
            raise AudioError(f"no audio stream in {path}")
        resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
        try:
            for frame in container.decode(audio=0):
                parts.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(frame))
            parts.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(None))
        except av.FFmpegError as exc:
            raise AudioError(f"cannot decode {path}: {exc}") from exc
    if not parts:
        return np.zeros(0, dtype=np.int16)
    return np.concatenate(parts).astype(np.int16, copy=False)


class WavSource(PacedSource):
    """Plays a file in real time like a microphone, then silence. ``start_unix``: its first sample."""

    def __init__(self, path: str | Path, *, max_lag_ms: float = 200, clock: Clock = REAL_CLOCK) -> None:
        super().__init__(max_lag_ms=max_lag_ms, clock=clock)
        self.path = Path(path)
        self._data = np.zeros(0, dtype=np.int16)

    def describe(self) -> dict[str, object]:
        return {"kind": "wav", "path": str(self.path), "start_unix": self.start_unix}

    async def start(self) -> None:
        if self.start_mono is not None:
            return
        if not self.path.is_file():
            raise AudioError(f"no such input file: {self.path}")
        self._data = await asyncio.to_thread(load_wav, self.path)
        log.info("input %s: %.2f s", self.path, len(self._data) / RATE)
        await super().start()

    @property
    def duration_s(self) -> float:
        return len(self._data) / RATE

    @property
    def finished(self) -> bool:
        """True once every sample of the file has been read (silence from now on)."""
        return self.frames_read * FRAME_SAMPLES >= len(self._data)

    def _frame(self, index: int) -> np.ndarray:
        a = index * FRAME_SAMPLES
        chunk = self._data[a : a + FRAME_SAMPLES]
        if len(chunk) == FRAME_SAMPLES:
            return chunk.copy()
        out = silence()
        out[: len(chunk)] = chunk
        return out


class WavSink(PacedSink):
    """Records, in real time and silence included, what a speaker would have played."""

    def __init__(
        self,
        path: str | Path,
        *,
        block: int = SINK_BLOCK_SAMPLES,
        flush_every_s: float = 0.5,
        clock: Clock = REAL_CLOCK,
    ) -> None:
        super().__init__(block=block, clock=clock)
        self.path = Path(path)
        self._flush_blocks = max(1, int(flush_every_s * RATE / block))
        self._wav: wave.Wave_write | None = None
        self._file: BinaryIO | None = None

    def describe(self) -> dict[str, object]:
        return {"kind": "wav", "path": str(self.path), "start_unix": self.start_unix}

    def _open(self) -> None:
        try:
            if self.path.parent != Path(""):
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "wb")  # noqa: SIM115 - closed in _close
        except OSError as exc:
            raise AudioError(f"cannot write output file {self.path}: {exc}") from exc
        wav = wave.open(self._file, "wb")
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(RATE)
        wav.writeframes(b"")  # header now, so even an empty run leaves a valid file
        self._wav = wav

    def _write(self, block: np.ndarray) -> None:
        assert self._wav is not None
        # writeframes() patches the RIFF sizes after each call: the file is always a valid WAV.
        self._wav.writeframes(block.astype("<i2", copy=False).tobytes())
        if self.blocks % self._flush_blocks == 0:
            assert self._file is not None
            self._file.flush()

    def _close(self) -> None:
        wav, f = self._wav, self._file
        self._wav = self._file = None
        try:
            if wav is not None:
                wav.close()
        finally:
            if f is not None:
                f.close()
