"""Wake word: the shipped microWakeWord models hear their phrase (espeak-ng) and ignore other speech."""

from __future__ import annotations

import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest

from bridge.errors import ConfigError
from bridge.kiosk.wakeword import MODELS, MicroWakeWord, load_wake_word

RATE = 48_000


def spoken(text: str, tmp: Path, voice: str = "en-us") -> np.ndarray:
    if shutil.which("espeak-ng") is None or shutil.which("sox") is None:
        pytest.skip("needs espeak-ng and sox (scripts/setup.sh installs them)")
    raw, out = tmp / "raw.wav", tmp / "48k.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "-w", str(raw), text], check=True)
    subprocess.run(["sox", str(raw), "-r", "48000", "-c", "1", "-b", "16", str(out)], check=True)
    with wave.open(str(out), "rb") as w:
        speech = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    pad = np.zeros(RATE, dtype=np.int16)
    return np.concatenate([pad, speech, pad])


def heard_at(detector: MicroWakeWord, pcm: np.ndarray) -> list[int]:
    return [i for i in range(len(pcm) // 960) if detector.feed(pcm[i * 960 : (i + 1) * 960])]


@pytest.mark.parametrize("voice", ["en-us", "en-gb"])
def test_okay_nabu_hears_its_phrase_once(tmp_path: Path, voice: str) -> None:
    detector = MicroWakeWord("okay_nabu")
    pcm = spoken("Okay Nabu", tmp_path, voice)
    hits = heard_at(detector, pcm)
    assert len(hits) == 1
    assert 50 <= hits[0] <= len(pcm) // 960  # after the 1 s of silence, while or just after it is said
    assert detector.detections == 1


def test_other_speech_does_not_wake(tmp_path: Path) -> None:
    detector = MicroWakeWord("okay_nabu")
    for text in ("Hey Mycroft", "Excuse me, where is the exhibition about ancient Egypt?", "Okay, no problem"):
        assert heard_at(detector, spoken(text, tmp_path)) == [], text
        detector.reset()


def test_every_built_in_model_loads_from_the_wheel() -> None:
    for name in MODELS:
        d = load_wake_word(name)
        assert d.name == name
        assert not d.feed(np.zeros(960, dtype=np.int16))


def test_unknown_wake_word_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown wake word 'computer'"):
        load_wake_word("computer")
