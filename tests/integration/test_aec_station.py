"""The station's echo cancellation on the PulseAudio virtual devices in an echo room, without a network.

A reply (espeak-ng speech) is pushed into the station's playout; the echo room sends the speaker back into
the microphone; what the microphone hands on (after the canceller: what an uplink would send) must stay below
the server VAD's default threshold (-40 dBFS, bridge.emulator.vad) from each reply's first word on, over the
calls of a kiosk (a station that would open its speaker per call keeps it open while it cancels echo: a new
output stream has a timing of its own, and the canceller leaked -30..-40 dBFS of a reply's echo after a
reopen); and a second run on the same devices, warm-started from the delay the first one saved.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from bridge.bench import echo_sim as sim
from bridge.call.station import Station
from tests.helpers import until

try:
    from tests.echo_room import EchoRoom, echo_room  # noqa: F401
    from tests.pulse import Pulse, pulse  # noqa: F401
except ModuleNotFoundError:  # plain `pytest` puts tests/ on sys.path, not the repo
    from echo_room import EchoRoom, echo_room  # type: ignore[no-redef]  # noqa: F401
    from pulse import Pulse, pulse  # type: ignore[no-redef]  # noqa: F401

pytestmark = [pytest.mark.pulseaudio, pytest.mark.timeout(90)]
RATE = 48_000
VAD_DBFS = -40.0


class Uplink:
    """What the microphone hands on, as a tap: 20 ms frames with their capture times."""

    def __init__(self) -> None:
        self.frames: list[tuple[float, np.ndarray]] = []

    def __call__(self, pcm: np.ndarray, captured: float) -> None:
        self.frames.append((captured, pcm.copy()))

    def loudest_dbfs(self, since: float, until_t: float) -> float:
        """The loudest 30 ms (the server VAD's minimum speech) in ``[since, until_t)``, in dBFS."""
        x = np.concatenate([f for t, f in self.frames if since <= t < until_t]).astype(np.float64)
        n = RATE * 30 // 1000
        k = len(x) // n
        rms = np.sqrt((x[: k * n].reshape(k, n) ** 2).mean(axis=1))
        return float(20 * np.log10(max(rms.max(), 1.0) / 32768))


async def _reply(station: Station, speech: np.ndarray, item: str) -> tuple[float, float]:
    """Play ``speech`` as reply ``item``; (monotonic start, end) once it has all been handed to the speaker."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    station.playout.push(speech, item)
    station.playout.end_item(item)
    await until(lambda: station.playout.handed_ms(item) >= len(speech) / 48 - 1, "the reply to play", 20)
    return start, loop.time()


async def test_echo_stays_below_the_server_vad_from_the_first_word(
    echo_room: EchoRoom,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    speech = sim.to_int16(sim.espeak("Hello, this is the assistant speaking to you now.", "en-us", peak=0.7))
    station = Station.for_devices(None, None, paced_replies=False, speaker_on_demand=True, aec_mode="on")
    uplink = Uplink()
    station.mic.add_tap(uplink)
    async with station.running():
        assert await station.calibrate()  # the first run on these devices: the burst
        assert station.echo is not None and station.echo.canceller.delay_ms is not None
        sink = station.sink
        levels = []
        for k in range(3):  # three calls, as a kiosk has them
            await station.speaker_on()
            start, end = await _reply(station, speech, f"reply-{k}")
            await asyncio.sleep(0.3)  # the echo's tail
            levels.append(round(uplink.loudest_dbfs(start, end + 0.3), 1))
            await station.speaker_off()  # with echo cancellation: the speaker stays open
            await asyncio.sleep(0.5)
        metrics = station.echo.metrics()
        assert station.sink is sink
    assert max(levels) < VAD_DBFS, (levels, metrics)

    # the next run on these devices starts warm: no burst, and its first reply is cancelled too
    station = Station.for_devices(None, None, paced_replies=False, aec_mode="auto")
    uplink = Uplink()
    station.mic.add_tap(uplink)
    async with station.running():
        assert not await station.calibrate()
        assert station.echo is not None and station.echo.warm
        start, end = await _reply(station, speech, "next-run")
        await asyncio.sleep(0.3)
        first = uplink.loudest_dbfs(start, end + 0.3)
        metrics = station.echo.metrics()
    assert first < VAD_DBFS, (first, metrics)
