"""``bridge run --kiosk`` end to end against the emulator, with a .wav microphone: idle until someone
speaks, a call per visitor with the first words kept, hang-up after silence, a fresh session for the next
visitor, no call for noise, the budget, /healthz and /metrics, SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import time
import wave
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bridge.bench import sounds
from bridge.emulator.testing import RunningEmulator, running_emulator
from tests.helpers import start_bridge, transcript_lines, until

RATE = 48_000
MARKER_S = 0.15  # a tone just before the words: the local VAD ignores it, so only the pre-roll can carry it
MARKER_HZ = 600


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_mic(path: Path, parts: list[np.ndarray]) -> None:
    data = sounds.to_int16(np.concatenate(parts))
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(data.tobytes())


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE), dtype=np.float32)


def utterance(cache: Path, text: str = "Hello, what is the weather like today?") -> np.ndarray:
    """A marker tone, then espeak-ng speech (about 3 s in all)."""
    t = np.arange(int(MARKER_S * RATE)) / RATE
    marker = (0.3 * np.sin(2 * np.pi * MARKER_HZ * t)).astype(np.float32)
    return np.concatenate([marker, sounds.espeak(text, "en-us", 160, cache) * 0.8])


def marker_heard(path: Path) -> bool:
    """The marker tone is in a recording: 50 ms windows where nearly all the energy (> 90 %) sits at 600 Hz,
    for at least 100 ms (speech has formants near 600 Hz, but never a pure tone that long)."""
    with wave.open(str(path), "rb") as w:
        x = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).astype(np.float64)
    n = int(0.05 * RATE)
    k = round(MARKER_HZ * n / RATE)
    run = 0
    for start in range(0, len(x) - n, n // 2):
        power = np.abs(np.fft.rfft(x[start : start + n] * np.hanning(n))) ** 2
        pure = power.sum() > 0 and power[k - 2 : k + 3].sum() / power.sum() > 0.9 and power.sum() > 1e9
        run = run + 1 if pure else 0
        if run >= 3:  # 100 ms of overlapping windows
            return True
    return False


class Kiosk:
    """A ``bridge run --kiosk`` process and its health endpoint."""

    def __init__(self, proc: asyncio.subprocess.Process, port: int, transcripts: Path) -> None:
        self.proc, self.port, self.transcripts = proc, port, transcripts

    async def health(self) -> dict[str, Any]:
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{self.port}/healthz") as resp:
            return dict(await resp.json())

    async def metrics(self) -> dict[str, float]:
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{self.port}/metrics") as resp:
            text = await resp.text()
        return {
            s.name + json.dumps(s.labels, sort_keys=True): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def calls(self) -> list[list[dict[str, Any]]]:
        return [transcript_lines(p) for p in sorted(self.transcripts.glob("kiosk-*.jsonl"))]

    async def stop(self) -> tuple[int, str, float]:
        t0 = time.monotonic()
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):  # it may have exited by itself (the test says so)
                self.proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(self.proc.communicate(), 15)
        assert self.proc.returncode is not None
        return self.proc.returncode, err.decode(), time.monotonic() - t0


async def start_kiosk(tmp: Path, emu: RunningEmulator, transport: str, *flags: str, output: str = "null") -> Kiosk:
    port = free_port()
    proc = await start_bridge(
        *("run", "--kiosk", "--transport", transport, "--api-base", emu.base_url),
        *("--input", str(tmp / "mic.wav"), "--output", output, "--health-port", str(port)),
        *("--transcript-dir", str(tmp / "calls"), "-v", *flags),
        env={"OPENAI_API_KEY": emu.api_key},
    )
    kiosk = Kiosk(proc, port, tmp / "calls")

    async def up() -> bool:
        try:
            return (await kiosk.health())["state"] in ("idle", "connecting", "in_call")
        except aiohttp.ClientError:
            return False

    deadline = time.monotonic() + 15
    while not await up():
        assert proc.returncode is None, (await proc.communicate())[1].decode()
        assert time.monotonic() < deadline, "the kiosk did not come up"
        await asyncio.sleep(0.1)
    return kiosk


async def test_two_visitors_get_two_calls_with_the_first_words_kept(tmp_path) -> None:
    cache = tmp_path / "speech"
    cache.mkdir()
    write_mic(tmp_path / "mic.wav", [silence(2.0), utterance(cache), silence(6.5), utterance(cache), silence(30)])
    async with running_emulator(think_ms=50, reply_seconds=0.5) as emu:
        kiosk = await start_kiosk(tmp_path, emu, "webrtc", "--hangup-after", "2")
        try:
            assert not emu.open_sessions()  # idle: nothing opened, nothing sent
            await until(lambda: len(kiosk.calls()) == 2 and len(kiosk.calls()[1]) > 2, "two visits", 30)
            await until(lambda: not emu.open_sessions() and kiosk.calls()[1][-1]["kind"] == "stats", "hung up", 15)
            health = await kiosk.health()
            metrics = await kiosk.metrics()
        finally:
            code, err, took = await kiosk.stop()
    assert code == 0, err
    calls = kiosk.calls()
    sessions = [next(x for x in call if x["kind"] == "session")["session_id"] for call in calls]
    assert len(set(sessions)) == 2  # a fresh session per visitor
    for call in calls:
        kinds = [x["kind"] for x in call]
        assert "user" in kinds and "assistant" in kinds and kinds[-1] == "stats", kinds
    assert health["state"] == "idle" and health["calls_today"] == 2
    assert metrics['bridge_kiosk_calls_total{"reason": "idle"}'] == 2
    assert metrics['bridge_kiosk_wakes_total{"source": "vad"}'] == 2
    assert metrics["bridge_kiosk_false_wakes_total{}"] == 0


@pytest.mark.parametrize("transport", ["webrtc", "ws"])
async def test_words_spoken_before_the_call_existed_reach_the_model(tmp_path, transport) -> None:
    """The emulator echoes what it hears: the marker tone, said before the local VAD fired and long before
    the call was up, comes back. Without the pre-roll and the backlog it would be lost (checked). (Barge-in
    is naive here: over WS the echo's own speech_started would flush the echo before it plays.)"""
    cache = tmp_path / "speech"
    cache.mkdir()
    write_mic(tmp_path / "mic.wav", [silence(1.5), utterance(cache), silence(30)])
    async with running_emulator(behaviour="echo") as emu:
        kiosk = await start_kiosk(tmp_path, emu, transport, "--bargein", "naive", output=str(tmp_path / "out.wav"))
        try:
            await until(lambda: emu.open_sessions(), "the call", 20)
            t0 = time.monotonic()
            await until(lambda: time.monotonic() - t0 > 5.0, "the utterance to come back", 10)
        finally:
            code, err, _ = await kiosk.stop()
    assert code == 0, err
    assert marker_heard(tmp_path / "out.wav")


async def test_noise_alone_opens_no_call(tmp_path) -> None:
    """The benchmark's non-speech kinds, one after the other (music first: music starting over a noise bed
    does wake Silero, docs/kiosk.md "Known false wakes")."""
    cache = tmp_path / "speech"
    cache.mkdir()
    noise = sounds.non_speech(2.0, cache)
    parts = [noise[name] for name in ("music", "door slams", "knocks/claps", "hvac", "pink", "white")]
    write_mic(tmp_path / "mic.wav", [silence(0.5), *parts, silence(5)])
    async with running_emulator() as emu:
        kiosk = await start_kiosk(tmp_path, emu, "ws")
        try:
            mic_seconds = 0.5 + sum(len(p) for p in parts) / RATE
            await asyncio.sleep(0)  # the kiosk hears the whole file: wait for its health to say so
            t0 = time.monotonic()
            await until(lambda: time.monotonic() - t0 >= mic_seconds + 1.0, "the noise to play", mic_seconds + 5)
            health = await kiosk.health()
        finally:
            code, err, _ = await kiosk.stop()
    assert code == 0, err
    assert health["state"] == "idle" and health["calls_today"] == 0 and health["wakes_today"] == 0, err[-3000:]
    assert not kiosk.calls() and not emu.log_events()  # nothing was sent anywhere


async def test_budget_spent_keeps_the_kiosk_idle_and_says_why(tmp_path) -> None:
    cache = tmp_path / "speech"
    cache.mkdir()
    write_mic(tmp_path / "mic.wav", [silence(1.0), utterance(cache), silence(4.0), utterance(cache), silence(30)])
    async with running_emulator(think_ms=50, reply_seconds=0.5) as emu:
        # 24 call seconds an hour, and no call starts with less than 20 left: the first call spends the rest
        kiosk = await start_kiosk(tmp_path, emu, "ws", "--hangup-after", "1", "--max-call-minutes-per-hour", "0.4")
        try:

            def one_call_over() -> bool:
                calls = kiosk.calls()
                return len(calls) == 1 and bool(calls[0]) and calls[0][-1]["kind"] == "stats"

            await until(one_call_over, "one call", 20)

            async def spent() -> bool:
                return (await kiosk.health())["state"] == "budget_spent"

            async def refused() -> bool:  # the second visitor speaks at 8 s
                return (await kiosk.metrics())['bridge_kiosk_wakes_refused_total{"reason": "budget"}'] >= 1

            deadline = time.monotonic() + 15
            while not (await spent() and await refused()):
                assert time.monotonic() < deadline, await kiosk.health()
                await asyncio.sleep(0.1)
            health = await kiosk.health()
            metrics = await kiosk.metrics()
        finally:
            code, err, _ = await kiosk.stop()
    assert code == 0, err
    assert "call budget spent" in (health["state_reason"] or "") and len(kiosk.calls()) == 1
    assert metrics['bridge_kiosk_wakes_refused_total{"reason": "budget"}'] >= 1


async def test_sigterm_in_a_call_hangs_up_and_exits_0_within_2_s(tmp_path) -> None:
    cache = tmp_path / "speech"
    cache.mkdir()
    write_mic(tmp_path / "mic.wav", [silence(1.0), utterance(cache), silence(30)])
    async with running_emulator(think_ms=50, reply_seconds=3.0) as emu:
        kiosk = await start_kiosk(tmp_path, emu, "webrtc", "--hangup-after", "30")
        try:
            await until(lambda: emu.open_sessions(), "the call", 20)
            await until(
                lambda: kiosk.calls() and any(x["kind"] == "assistant" for x in kiosk.calls()[0]), "a reply", 20
            )
        finally:
            code, err, took = await kiosk.stop()
        await until(lambda: not emu.open_sessions(), "hung up", 5)
    assert code == 0 and took <= 2.0, (code, took, err)
    (call,) = kiosk.calls()
    assert call[-1]["kind"] == "stats"
