"""pytest helper for the private PulseAudio daemon (scripts/pulse-up.sh): the real sounddevice path.

Use it from a test module with ``from tests.pulse import pulse  # noqa: F401`` and a ``pulse`` argument
(or ``pytest.mark.usefixtures("pulse")``). The session fixture reuses a daemon that already answers at
``$PULSE_SERVER`` with the ``spk``/``micsink``/``mic`` devices (scripts/test.sh starts one), or starts its
own in a temporary ``BRIDGE_PULSE_DIR`` and stops it at the end. Without pulseaudio installed the tests
SKIP with the apt command as the reason (tests/conftest.py turns skips into failures in CI).

Devices (ENVIRONMENT.md): ``paplay -d micsink FILE`` is heard by an input stream on the default source
``mic``; ``parec -d spk.monitor`` captures what an output stream played on the default sink ``spk``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
APT = "apt-get install -y --no-install-recommends pulseaudio pulseaudio-utils libasound2-plugins libportaudio2"
TOOLS = ("pulseaudio", "pactl", "paplay", "parec")


@dataclass
class Pulse:
    server: str
    started: bool
    base: Path | None

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env["PULSE_SERVER"] = self.server
        env.update(extra)
        return env

    def pactl(self, *args: str) -> str:
        return subprocess.run(
            ["pactl", *args], env=self.env(), check=True, capture_output=True, text=True, timeout=10
        ).stdout


def _has_devices(env: dict[str, str]) -> bool:
    try:
        out = subprocess.run(
            ["pactl", "list", "short", "sinks"], env=env, capture_output=True, text=True, timeout=5
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    names = {line.split("\t")[1] for line in out.splitlines() if "\t" in line}
    return {"spk", "micsink"} <= names


def _rescan() -> None:
    """PortAudio lists devices once per initialisation; look again now that the server is up."""
    try:
        from bridge.media.portaudio import rescan

        rescan()
    except Exception:  # PortAudio missing: the tests report it through bridge's own errors
        pass


@pytest.fixture(scope="session")
def pulse() -> Iterator[Pulse]:
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        pytest.skip(f"PulseAudio tools missing ({', '.join(missing)}): {APT}")
    saved = {k: os.environ.get(k) for k in ("PULSE_SERVER", "XDG_RUNTIME_DIR")}
    if os.environ.get("PULSE_SERVER") and _has_devices(dict(os.environ)):
        info = Pulse(os.environ["PULSE_SERVER"], started=False, base=None)
    else:
        base = Path(tempfile.mkdtemp(prefix="bridge-pulse-"))
        env = dict(os.environ, BRIDGE_PULSE_DIR=str(base))
        env.pop("PULSE_SERVER", None)
        proc = subprocess.run(
            ["bash", str(REPO / "scripts/pulse-up.sh")], env=env, capture_output=True, text=True, timeout=60
        )
        if proc.returncode != 0:
            pytest.fail(f"scripts/pulse-up.sh failed: {proc.stderr.strip()}")
        for line in proc.stdout.splitlines():
            if line.startswith("export "):
                key, _, value = line[len("export ") :].partition("=")
                os.environ[key] = value
        info = Pulse(os.environ["PULSE_SERVER"], started=True, base=base)
    _rescan()
    try:
        yield info
    finally:
        if info.started and info.base is not None:
            subprocess.run(
                ["bash", str(REPO / "scripts/pulse-down.sh")],
                env=dict(os.environ, BRIDGE_PULSE_DIR=str(info.base)),
                capture_output=True,
                timeout=30,
            )
            shutil.rmtree(info.base, ignore_errors=True)
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            _rescan()


def tone(seconds: float, freq: float = 1000.0, level: float = 0.5, rate: int = 48_000) -> np.ndarray:
    """A sine burst with 2 ms ramps, int16."""
    n = int(seconds * rate)
    x = level * np.sin(2 * np.pi * freq * np.arange(n) / rate)
    ramp = min(n // 2, rate // 500)
    x[:ramp] *= np.linspace(0, 1, ramp)
    x[n - ramp :] *= np.linspace(1, 0, ramp)
    return (x * 32767).astype(np.int16)


def write_wav(path: Path, samples: np.ndarray, rate: int = 48_000) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.astype("<i2").tobytes())
    return path


def dominant_hz(samples: np.ndarray, rate: int = 48_000) -> float:
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64) * np.hanning(len(samples))))
    return float(np.argmax(spectrum) * rate / len(samples))


def active_span(samples: np.ndarray, threshold: int = 1000) -> tuple[int, int] | None:
    """(first, last + 1) sample index above ``threshold``, or None."""
    idx = np.flatnonzero(np.abs(samples.astype(np.int32)) > threshold)
    return None if len(idx) == 0 else (int(idx[0]), int(idx[-1]) + 1)
