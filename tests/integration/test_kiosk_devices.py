"""Devices come and go under a running kiosk: the virtual microphone and speaker of a private PulseAudio
daemon are unloaded and loaded again (the sound server quietly moves streams to a fallback: the kiosk must
notice), and the daemon is restarted (the streams die), in idle and during a call. The kiosk reports
``no_device``, hangs up, reopens the same devices when they are back, and serves the next visitor."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from bridge.bench import sounds
from bridge.emulator.testing import running_emulator
from tests.helpers import until
from tests.integration.test_kiosk_run import RATE, Kiosk, free_port, silence, utterance

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.pulseaudio, pytest.mark.timeout(180)]
MIC_MODULE = ["module-remap-source", "source_name=mic", "master=micsink.monitor"]
SPK_MODULE = ["module-null-sink", "sink_name=spk", "rate=48000", "channels=1", "norewinds=1"]


class Daemon:
    """A private PulseAudio daemon of this test's own (scripts/pulse-up.sh in a temporary directory)."""

    def __init__(self) -> None:
        if shutil.which("pulseaudio") is None:
            pytest.skip("pulseaudio is not installed (apt-get install pulseaudio pulseaudio-utils)")
        self.base = Path(tempfile.mkdtemp(prefix="bridge-pulse-hot-"))
        self.env: dict[str, str] = {}

    def up(self) -> None:
        env = {k: v for k, v in os.environ.items() if k not in ("PULSE_SERVER", "PULSE_SOURCE", "PULSE_SINK")}
        env["BRIDGE_PULSE_DIR"] = str(self.base)
        out = subprocess.run(
            ["bash", str(REPO / "scripts/pulse-up.sh")], env=env, capture_output=True, text=True, timeout=60, check=True
        ).stdout
        for line in out.splitlines():
            key, _, value = line.removeprefix("export ").partition("=")
            env[key] = value
        self.env = env

    def down(self) -> None:
        subprocess.run(["bash", str(REPO / "scripts/pulse-down.sh")], env=self.env, capture_output=True, timeout=30)

    def pactl(self, *args: str) -> str:
        return subprocess.run(["pactl", *args], env=self.env, capture_output=True, text=True, timeout=10).stdout

    def unload(self, pattern: str) -> None:
        for line in self.pactl("list", "short", "modules").splitlines():
            if pattern in line:
                self.pactl("unload-module", line.split()[0])

    def load(self, module: list[str], default: tuple[str, str]) -> None:
        self.pactl("load-module", *module)
        self.pactl(default[0], default[1])

    async def play(self, path: Path) -> None:
        proc = await asyncio.create_subprocess_exec("paplay", "-d", "micsink", str(path), env=self.env)
        await proc.wait()


@pytest.fixture
def daemon() -> Iterator[Daemon]:
    d = Daemon()
    d.up()
    try:
        yield d
    finally:
        d.down()
        shutil.rmtree(d.base, ignore_errors=True)


def write(path: Path, x: np.ndarray) -> Path:
    import wave

    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(sounds.to_int16(x).tobytes())
    return path


async def state_is(kiosk: Kiosk, *states: str, timeout: float = 15) -> dict[str, object]:
    async def now() -> dict[str, object]:
        try:
            return await kiosk.health()
        except OSError:
            return {}

    health: dict[str, object] = {}
    async with asyncio.timeout(timeout):
        while (health := await now()).get("state") not in states:  # noqa: ASYNC110 - another process, polled
            await asyncio.sleep(0.1)
    return health


async def test_the_kiosk_outlives_its_devices_and_the_sound_server(tmp_path, daemon: Daemon) -> None:
    cache = tmp_path / "speech"
    cache.mkdir()
    speech = write(tmp_path / "speech.wav", np.concatenate([utterance(cache), silence(0.5)]))
    async with running_emulator(think_ms=50, reply_seconds=4.0) as emu:
        port = free_port()
        env = {**daemon.env, "OPENAI_API_KEY": emu.api_key}
        proc = await asyncio.create_subprocess_exec(
            "python3", "-m", "bridge", "run", "--kiosk", "--transport", "ws", "--api-base", emu.base_url,
            "--health-port", str(port), "--transcript-dir", str(tmp_path / "calls"), "-v",
            env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        kiosk = Kiosk(proc, port, tmp_path / "calls")
        failure: BaseException | None = None
        try:
            await state_is(kiosk, "idle")
            # 1. in idle, the microphone's device goes away (the server moves the stream elsewhere) and back
            daemon.unload("module-remap-source")
            health = await state_is(kiosk, "no_device")
            assert "microphone 'mic' went away" in str(health["last_error"]), health
            daemon.load(MIC_MODULE, ("set-default-source", "mic"))
            await state_is(kiosk, "idle")
            # 2. a visitor, and during the call the speaker goes away: hung up, back when the device is
            await daemon.play(speech)
            await state_is(kiosk, "in_call")
            await until(lambda: emu.open_sessions(), "the call", 10)
            daemon.unload("sink_name=spk")
            await state_is(kiosk, "no_device")
            await until(lambda: not emu.open_sessions(), "the call hung up", 10)
            daemon.load(SPK_MODULE, ("set-default-sink", "spk"))
            await state_is(kiosk, "idle")
            # 3. the sound server restarts: every stream dies; the kiosk comes back with it
            daemon.pactl("exit")
            await state_is(kiosk, "no_device")
            daemon.up()
            await state_is(kiosk, "idle", timeout=30)
            # 4. and the next visitor is served
            await daemon.play(speech)
            await state_is(kiosk, "in_call", "connecting")
            await until(lambda: len(kiosk.calls()) == 2, "the second call", 10)
            metrics = await kiosk.metrics()
        except BaseException as exc:  # noqa: BLE001 - re-raised below with the kiosk's own log
            failure = exc
        finally:
            code, err, _ = await kiosk.stop()
        if failure is not None:
            raise AssertionError(f"{failure!r}; the kiosk's log:\n{err[-4000:]}") from failure
        assert code == 0, err[-3000:]
    assert metrics['bridge_kiosk_calls_total{"reason": "device_lost"}'] == 1
    first_call = kiosk.calls()[0]
    assert first_call[-1]["kind"] == "stats"  # the call's transcript was closed properly
