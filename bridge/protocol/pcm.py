"""PCM16 helpers for the Realtime audio formats (PROTOCOL.md 3).

``audio/pcm`` is 16-bit signed little-endian, 24 kHz, mono: 48 bytes per millisecond.
WebRTC media is Opus at 48 kHz; the 2:1 resamplers here are cheap and exact in length.
"""

from __future__ import annotations

import base64

import numpy as np

RATE = 24_000
BYTES_PER_MS = RATE * 2 // 1000  # 48
WEBRTC_RATE = 48_000


def ms_of(nbytes: int) -> float:
    """Duration in ms of ``nbytes`` of 24 kHz PCM16 mono."""
    return nbytes / BYTES_PER_MS


def bytes_for_ms(ms: float) -> int:
    """Whole-sample byte count for ``ms`` of 24 kHz PCM16 mono."""
    return int(ms * RATE / 1000) * 2


def b64encode(pcm: bytes) -> str:
    return base64.b64encode(pcm).decode("ascii")


def b64decode(data: str) -> bytes:
    return base64.b64decode(data, validate=True)


def to_int16(samples: np.ndarray) -> np.ndarray:
    """Float [-1, 1] or any int array to int16 with clipping."""
    if samples.dtype == np.int16:
        return samples
    if np.issubdtype(samples.dtype, np.floating):
        scaled: np.ndarray = np.clip(np.round(samples * 32767.0), -32768, 32767).astype(np.int16)
        return scaled
    clipped: np.ndarray = np.clip(samples, -32768, 32767).astype(np.int16)
    return clipped


def downsample_48k_to_24k(pcm48: np.ndarray) -> np.ndarray:
    """Mono int16 48 kHz to 24 kHz: average sample pairs (a 2-tap low-pass), length halves."""
    x = pcm48.astype(np.int32)
    if len(x) % 2:
        x = x[:-1]
    return ((x[0::2] + x[1::2]) // 2).astype(np.int16)


def upsample_24k_to_48k(pcm24: np.ndarray) -> np.ndarray:
    """Mono int16 24 kHz to 48 kHz by linear interpolation, length doubles."""
    x = pcm24.astype(np.int32)
    out = np.empty(len(x) * 2, dtype=np.int32)
    out[0::2] = x
    nxt = np.concatenate([x[1:], x[-1:]]) if len(x) else x
    out[1::2] = (x + nxt) // 2
    return out.astype(np.int16)


def rms_dbfs(pcm: np.ndarray) -> float:
    """RMS level of int16 samples in dBFS (-inf for silence)."""
    if len(pcm) == 0:
        return float("-inf")
    rms = float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2))) / 32768.0
    return 20.0 * np.log10(rms) if rms > 0 else float("-inf")
