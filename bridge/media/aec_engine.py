"""The echo-cancelling engine behind :class:`bridge.media.aec.EchoCanceller`, swappable.

An :class:`EchoEngine` takes the microphone and the far-end reference in lockstep, 10 ms at a time, already
aligned by the caller (:mod:`bridge.media.farend`), and returns the microphone with the echo removed. It
declares how much its output lags its input (``lag``), measured once on a private instance, because WebRTC's
AEC3 delays the near end by ~9 ms at 48 kHz in every wrapper tried (its 64-sample block framing and the
overlap-add of its suppression filter, 4 ms each at the 16 kHz band rate, plus the 48 kHz band split; docs/
benchmarks.md, "Echo cancellation"), and the canceller keeps that out of the uplink when no echo is possible.

:class:`Aec3Engine` is WebRTC's AEC3 through ``pywebrtc-audio`` (Apache-2.0, a 0.44 MB wheel needing only
NumPy; https://github.com/strands-labs/pywebrtc-audio, ``EchoCanceller.process(near, far)``, GIL released).
:func:`load_engine` returns None when the wheel is missing so that ``auto`` can fall back to no AEC.
"""

from __future__ import annotations

import abc
import logging
from typing import Any, Literal

import numpy as np

log = logging.getLogger(__name__)

EngineName = Literal["aec3"]
ENGINES: tuple[EngineName, ...] = ("aec3",)
INSTALL_HINT = "pip install pywebrtc-audio"


class EchoEngine(abc.ABC):
    """One echo canceller instance; used from one thread (the capture thread) only."""

    name: str = ""
    rate: int = 48_000

    def __init__(self) -> None:
        self.lag = 0
        """Samples by which :meth:`process` output lags its input (set by :meth:`measure_lag`)."""

    @property
    def chunk(self) -> int:
        """Samples per call: 10 ms."""
        return self.rate // 100

    @abc.abstractmethod
    def process(self, near: np.ndarray, far: np.ndarray) -> np.ndarray:
        """``near`` and ``far``: :attr:`chunk` int16 samples each, the far end already aligned so that its
        echo arrives in ``near`` at the same time or later. Returns :attr:`chunk` int16 samples."""

    @abc.abstractmethod
    def reset(self) -> None:
        """Forget the echo path (filters, delay estimate); the configuration stays."""

    @abc.abstractmethod
    def fresh(self) -> EchoEngine:
        """A new instance with the same configuration (used to measure the lag without disturbing this one)."""

    def measure_lag(self) -> int:
        """Find :attr:`lag` by running noise through a fresh instance with a silent far end."""
        probe = self.fresh()
        rng = np.random.default_rng(0)
        n = self.chunk
        x = (rng.normal(0, 3000, 12 * n)).astype(np.int16)
        silent = np.zeros(n, dtype=np.int16)
        y = np.concatenate([probe.process(x[i : i + n], silent) for i in range(0, len(x), n)])
        size = 1 << int(np.ceil(np.log2(2 * len(x))))
        c = np.fft.irfft(np.fft.rfft(y.astype(np.float64), size) * np.conj(np.fft.rfft(x.astype(np.float64), size)))
        self.lag = int(np.argmax(c[: 4 * n]))
        return self.lag


class Aec3Engine(EchoEngine):
    """WebRTC AEC3 (``pywebrtc_audio.EchoCanceller``) at 48 kHz mono; its own delay estimator refines the
    alignment within ~0-500 ms (measured: default settings cancel up to 500 ms, not 600 ms)."""

    name = "aec3"

    def __init__(self, module: Any, rate: int = 48_000) -> None:
        super().__init__()
        self._module = module
        self.rate = rate
        self._ec = module.EchoCanceller(sample_rate=rate, num_channels=1, stream_delay_ms=0)

    def process(self, near: np.ndarray, far: np.ndarray) -> np.ndarray:
        out: np.ndarray = self._ec.process(near, far)
        return out

    def reset(self) -> None:
        self._ec.reset()

    def fresh(self) -> Aec3Engine:
        return Aec3Engine(self._module, self.rate)


def describe_engine(name: EngineName = "aec3") -> str | None:
    """What ``bridge devices`` / ``-v`` can print without building anything: ``"aec3 (pywebrtc-audio 0.2.0)"``,
    or None when the wheel is not installed."""
    from importlib import metadata

    try:
        return f"{name} (pywebrtc-audio {metadata.version('pywebrtc-audio')})"
    except metadata.PackageNotFoundError:
        return None


def load_engine(name: EngineName = "aec3") -> EchoEngine | None:
    """The engine, or None (and the reason at debug level) when its wheel is not installed."""
    if name != "aec3":
        raise ValueError(f"unknown echo cancellation engine {name!r} (engines: {', '.join(ENGINES)})")
    try:
        import pywebrtc_audio
    except ImportError as exc:
        log.debug("pywebrtc-audio not importable: %s", exc)
        return None
    engine = Aec3Engine(pywebrtc_audio)
    engine.measure_lag()
    return engine
