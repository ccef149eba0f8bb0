"""Behaviours: tone length, espeak-ng speech (or tone fallback), script files (JSON/TOML), loading errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from bridge.emulator.behaviours import Turn, load_behaviour
from bridge.emulator.behaviours.speech import parse_wav
from bridge.errors import ConfigError

TURN = Turn(index=0, user_text=None, user_audio_ms=800.0, last_item_type="message")


async def test_tone_reply_length_and_text() -> None:
    reply = await load_behaviour("tone", 1.5).reply(TURN)
    assert len(reply.audio) == int(1.5 * 24000) * 2 and "reply number 1" in reply.text
    pcm = np.frombuffer(reply.audio, dtype="<i2")
    assert 0.2 < np.abs(pcm).max() / 32768 < 0.4


async def test_speech_reply_is_audible_speech_or_tone() -> None:
    reply = await load_behaviour("speech", 1.0).reply(TURN)
    assert reply.text.startswith("Hello.") and len(reply.audio) > 24000  # > 0.5 s
    if shutil.which("espeak-ng"):
        pcm = np.frombuffer(reply.audio, dtype="<i2").astype(np.float64)
        assert np.sqrt(np.mean(pcm**2)) > 300  # real signal, not silence


def test_echo_is_named_for_transports() -> None:
    assert load_behaviour("echo").name == "echo"


async def test_toml_script_and_wav_audio(tmp_path: Path) -> None:
    pcm = (np.sin(np.arange(2400) / 5) * 8000).astype("<i2").tobytes()
    header = b"RIFF" + (36 + len(pcm)).to_bytes(4, "little") + b"WAVEfmt " + (16).to_bytes(4, "little")
    header += (1).to_bytes(2, "little") + (1).to_bytes(2, "little") + (24000).to_bytes(4, "little")
    header += (48000).to_bytes(4, "little") + (2).to_bytes(2, "little") + (16).to_bytes(2, "little")
    (tmp_path / "r.wav").write_bytes(header + b"data" + len(pcm).to_bytes(4, "little") + pcm)
    assert parse_wav((tmp_path / "r.wav").read_bytes()) == (24000, pcm)
    script = tmp_path / "s.toml"
    script.write_text('[[turns]]\nuser = "hi"\ntext = "from a file"\naudio = "r.wav"\nthink_ms = 5\n')
    b = load_behaviour(f"script:{script}")
    reply = await b.reply(TURN)
    assert (reply.text, reply.audio, reply.think_ms) == ("from a file", pcm, 5)
    assert b.transcribe(b"\x00" * 4800, 0) == "hi" and b.transcribe(b"\x00" * 4800, 1) == "(audio 100 ms)"
    after = await b.reply(Turn(5, None, 0.0, None))
    assert "no more turns" in after.text


def test_bad_behaviours_fail_with_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_behaviour("nope")
    with pytest.raises(ConfigError):
        load_behaviour(f"script:{tmp_path / 'missing.json'}")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"turns": "x"}))
    with pytest.raises(ConfigError):
        load_behaviour(f"script:{bad}")
