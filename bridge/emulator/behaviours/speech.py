"""``speech``: answers with spoken text via espeak-ng when installed, else a tone of the same length."""

from __future__ import annotations

import asyncio
import logging
import shutil

import numpy as np

from bridge.emulator.behaviours.base import Reply, TimedBehaviour, Turn, tone
from bridge.protocol.pcm import RATE

log = logging.getLogger(__name__)


def _resample(pcm: np.ndarray, rate: int) -> np.ndarray:
    if rate == RATE or len(pcm) == 0:
        return pcm
    n_out = int(len(pcm) * RATE / rate)
    x_old = np.arange(len(pcm)) / rate
    x_new = np.arange(n_out) / RATE
    return np.interp(x_new, x_old, pcm.astype(np.float64)).astype(np.int16)


async def synthesize(text: str) -> bytes | None:
    """espeak-ng to PCM16 24 kHz mono, or None when espeak-ng is missing or fails."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        return None
    proc = await asyncio.create_subprocess_exec(
        exe,
        "-v",
        "en-us",
        "-s",
        "170",
        "--stdout",
        text,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    out, _ = await proc.communicate()
    if proc.returncode != 0 or not out:
        log.warning("espeak-ng failed (rc=%s); answering with a tone", proc.returncode)
        return None
    rate, frames = parse_wav(out)
    return _resample(np.frombuffer(frames, dtype="<i2"), rate).tobytes()


def parse_wav(blob: bytes) -> tuple[int, bytes]:
    """(rate, PCM bytes) of a 16-bit mono WAV, tolerating the bogus sizes espeak-ng --stdout writes."""
    rate = int.from_bytes(blob[24:28], "little")
    pos = 12
    while pos + 8 <= len(blob):
        cid, size = blob[pos : pos + 4], int.from_bytes(blob[pos + 4 : pos + 8], "little")
        if cid == b"data":
            data = blob[pos + 8 :]
            return rate, data[: len(data) // 2 * 2]
        pos += 8 + size
    return rate, b""


class SpeechBehaviour(TimedBehaviour):
    name = "speech"

    async def reply(self, turn: Turn) -> Reply:
        heard = f"{int(turn.user_audio_ms)} milliseconds of audio" if turn.user_audio_ms else "your message"
        text = f"Hello. This is reply number {turn.index + 1}. I heard {heard}."
        audio = await synthesize(text)
        return Reply(text=text, audio=audio if audio is not None else tone(self.seconds))
