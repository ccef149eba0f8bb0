"""Streaming linear resampler and channel mixing for devices that cannot do 48 kHz mono.

Linear interpolation is crude next to a polyphase filter but adds no delay and keeps exact sample
accounting across blocks, which matters more here (timing) than the last dB of aliasing; the common case
(PulseAudio, most USB headsets) opens at 48 kHz and never gets here.
"""

from __future__ import annotations

import math

import numpy as np


def to_mono(block: np.ndarray) -> np.ndarray:
    """(frames, channels) or (frames,) int16 -> (frames,) int16, averaging channels."""
    if block.ndim == 1:
        return block
    if block.shape[1] == 1:
        return block[:, 0]
    mono: np.ndarray = block.astype(np.int32).mean(axis=1).astype(np.int16)
    return mono


class LinearResampler:
    """Converts a stream from ``in_rate`` to ``out_rate`` block by block, with no drift.

    The position of the next output sample is kept relative to the last input sample of the previous
    block (index 0 of ``[prev] + block``), so block boundaries are invisible.
    """

    def __init__(self, in_rate: int, out_rate: int) -> None:
        self.in_rate = in_rate
        self.out_rate = out_rate
        self.step = in_rate / out_rate
        self._prev = 0.0
        self._pos = 1.0  # first output lands on the first input sample

    def inputs_needed(self, n_out: int) -> int:
        """How many input samples the next ``process`` needs to yield at least ``n_out`` samples."""
        if n_out <= 0:
            return 0
        return max(0, math.ceil(self._pos + (n_out - 1) * self.step - 1e-9))

    def process(self, block: np.ndarray) -> np.ndarray:
        if self.in_rate == self.out_rate:
            return block
        x = np.concatenate(([self._prev], block.astype(np.float64)))
        last = len(x) - 1
        if self._pos > last:
            self._pos -= len(block)
            if len(block):
                self._prev = float(x[-1])
            return np.zeros(0, dtype=np.int16)
        count = math.floor((last - self._pos) / self.step + 1e-9) + 1
        positions = self._pos + self.step * np.arange(count)
        out = np.interp(positions, np.arange(len(x)), x)
        self._pos = positions[-1] + self.step - len(block)
        self._prev = float(x[-1])
        pcm: np.ndarray = np.clip(np.round(out), -32768, 32767).astype(np.int16)
        return pcm
