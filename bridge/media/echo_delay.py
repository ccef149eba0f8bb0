"""A coarse echo-delay estimator over a long range (-0.1 .. +1.2 s), for echo paths AEC3 cannot reach.

AEC3's own delay estimator searches ~0-500 ms with its default settings (measured: an echo 600 ms after its
reference is not cancelled at all; pywebrtc-audio issue #5 reports the same and that more matched filters,
``EchoCanceller3Config.delay.num_filters``, fix it, but no wheel exposes that setting). Bluetooth and USB
speakers or PipeWire graphs can add hundreds of ms that PortAudio's timestamps do not report. This finds
the echo's delay against the reference the engine is given, so :class:`bridge.media.aec.EchoCanceller` can
pre-align the reference and leave AEC3 a short rest; the estimate is also what a warm start persists.

Method: both signals are decimated to 4 kHz (sums of 12 samples), the last ``history_s`` are kept, and a
generalised cross-correlation with partial phase transform (GCC-PHAT, weighting ``|X Y*|^-0.8``) gives the lag
of the microphone behind the reference. A peak counts only when it stands well above the rest of the
correlation and enough of the reference window was speech; :class:`DelayEstimator` returns None otherwise.
Cost: three 32k-point real FFTs, run every ``every_s`` (~1 ms each time on this machine).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RATE = 48_000


@dataclass(frozen=True)
class Estimate:
    lag_s: float
    """How long after the reference its echo arrives in the microphone signal."""
    quality: float
    """Correlation peak over the next-best peak outside +-5 ms (>= ``min_ratio`` to be returned)."""


class DelayEstimator:
    def __init__(
        self,
        *,
        rate: int = RATE,
        decimation: int = 12,
        history_s: float = 3.2,
        min_lag_s: float = -0.1,
        max_lag_s: float = 1.2,
        min_active: float = 0.15,
        min_ratio: float = 1.6,
        min_history_s: float = 1.6,
    ) -> None:
        self.rate = rate
        self.decimation = decimation
        self.low_rate = rate / decimation
        self._n = int(history_s * self.low_rate)
        self._near = np.zeros(self._n, dtype=np.float32)
        self._far = np.zeros(self._n, dtype=np.float32)
        self._pos = 0
        self._filled = 0
        self._min_lag = int(min_lag_s * self.low_rate)
        self._max_lag = int(max_lag_s * self.low_rate)
        self._min_active = min_active
        self._min_ratio = min_ratio
        self._size = 1 << int(np.ceil(np.log2(2 * self._n)))
        self._min_fill = int(min_history_s * self.low_rate)

    def push(self, near: np.ndarray, far: np.ndarray) -> None:
        """Append time-aligned microphone and reference samples (a multiple of ``decimation`` long)."""
        d = self.decimation
        a = near.reshape(-1, d).sum(axis=1, dtype=np.float32)  # sums, not means: the scale does not matter
        b = far.reshape(-1, d).sum(axis=1, dtype=np.float32)
        k = len(a)
        i = self._pos
        first = min(k, self._n - i)
        self._near[i : i + first], self._far[i : i + first] = a[:first], b[:first]
        if first < k:
            self._near[: k - first], self._far[: k - first] = a[first:], b[first:]
        self._pos = (i + k) % self._n
        self._filled = min(self._n, self._filled + k)

    def reset(self) -> None:
        self._near[:] = 0
        self._far[:] = 0
        self._filled = 0

    def estimate(self) -> Estimate | None:
        if self._filled < self._min_fill:
            return None
        near = np.roll(self._near, -self._pos)[-self._filled :].astype(np.float64)
        far = np.roll(self._far, -self._pos)[-self._filled :].astype(np.float64)
        block = int(self.low_rate / 100)  # 10 ms
        energy = (far[: len(far) // block * block].reshape(-1, block) ** 2).sum(axis=1)
        if energy.max() <= 0 or (energy > 1e-3 * energy.max()).mean() < self._min_active:
            return None
        x, y = np.fft.rfft(near, self._size), np.fft.rfft(far, self._size)
        g = x * np.conj(y)
        g /= np.abs(g) ** 0.8 + 1e-9
        c = np.fft.irfft(g, self._size)
        lags = np.arange(self._min_lag, min(self._max_lag, self._filled - int(0.3 * self.low_rate)) + 1)
        values = c[lags % self._size]
        k = int(np.argmax(values))
        peak = float(values[k])
        guard = int(0.005 * self.low_rate)
        rest = np.concatenate([values[: max(0, k - guard)], values[k + guard + 1 :]])
        second = float(rest.max()) if len(rest) else 0.0
        if peak <= 0 or second <= 0:
            return None
        ratio = peak / second
        if ratio < self._min_ratio:
            return None
        return Estimate(lag_s=float(lags[k]) / self.low_rate, quality=ratio)
