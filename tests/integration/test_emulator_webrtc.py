"""The emulator's WebRTC answerer against a plain aiortc client (not bridge.link), all on 127.0.0.1."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from emulator_client import LOUD, Client, connected_client

from bridge.emulator.testing import RunningEmulator, running_emulator

pytestmark = pytest.mark.serial  # it measures a round trip: alone, not beside other tests


def _hangup_url(emu: RunningEmulator, client: Client) -> str:
    return f"http://127.0.0.1:{emu.port}{client.call_path}/hangup"


async def test_call_audio_events_bargein_and_hangup() -> None:
    async with (
        running_emulator(behaviour="tone", think_ms=100, reply_seconds=2.0) as emu,
        aiohttp.ClientSession() as http,
    ):
        async with connected_client(emu, http) as c:
            assert c.types()[0] == "session.created"

            # Turn 1: a 0.6 s burst; server VAD ends the turn, a 2 s tone reply comes back over RTP.
            c.say(0.6)
            started = await c.wait_event("output_audio_buffer.started", timeout=8)
            for etype in ("input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
                          "input_audio_buffer.committed", "response.created"):  # fmt: skip
                assert etype in c.types()
            rid = started["response_id"]
            reply_start = len(c.heard)
            # Barge in ~0.7 s into the reply.
            await c.frames(35)
            mark = len(c.events)
            c.say(0.5)
            cleared = await c.wait_event("output_audio_buffer.cleared", after=mark, timeout=5)
            t_cleared = c.event_times[c.events.index(cleared)]
            truncated = await c.wait_event("conversation.item.truncated", after=mark, timeout=2)
            assert cleared["response_id"] == rid
            # What the client received of the reply before the server said "cleared".
            got_ms = 20 * sum(1 for t, p in c.heard[reply_start:] if p > LOUD and t <= t_cleared)
            assert abs(truncated["audio_end_ms"] - got_ms) <= 80, (truncated, got_ms)
            assert 500 <= truncated["audio_end_ms"] <= 1600
            # The reply audio stops on the wire: no loud reply frames 150 ms after cleared...
            await c.frames(20)
            late = [p for t, p in c.heard if t > t_cleared + 0.15 and p > LOUD]
            # ...except our own burst is not echoed (tone behaviour): only silence or the next reply.
            assert len(late) == 0 or "response.created" in c.types()[mark:]

            # The second turn (the barge-in burst) gets its own reply that plays to the end.
            stopped_idx = len(c.events)
            stopped = await c.wait_event("output_audio_buffer.stopped", after=stopped_idx, timeout=8)
            types = c.types()
            assert types.index("response.done", stopped_idx - 1 if stopped_idx else 0) < types.index(
                "output_audio_buffer.stopped", stopped_idx
            )
            assert stopped["response_id"] != rid
            assert "response.output_audio.delta" not in types
            assert "response.output_audio_transcript.delta" in types
            assert c.rx.stats.frames_out > 100 and c.rx.stats.concealed == 0

            # Hang up: the server closes the peer and the engine.
            call_id = c.call_path.rsplit("/", 1)[1]
            call = emu.state.calls[call_id]
            async with http.post(_hangup_url(emu, c), headers={"Authorization": f"Bearer {emu.api_key}"}) as r:
                assert r.status == 200
            assert call.closed and call.engine.closed
            async with asyncio.timeout(5):
                await c.peer_closed.wait()


async def test_echo_round_trip_latency() -> None:
    async with running_emulator(behaviour="echo") as emu, aiohttp.ClientSession() as http:
        async with connected_client(emu, http) as c:
            await c.frames(15)  # let RTP flow both ways
            rtts = []
            for _ in range(6):
                c.onset.clear()
                c.say(0.1, 1000.0)
                async with asyncio.timeout(3):
                    await c.onset.wait()
                rtts.append((c.onsets[-1] - c.burst_sent_at[-1]) * 1000)
                await c.frames(15)
            print(f"echo round trip ms (client pull -> client on_audio): {[round(x, 1) for x in rtts]}")
            # Two wire hops + the wait for the emulator track's next 20 ms deadline (phase-dependent,
            # 0-20 ms; one more frame when the loop is busy), nothing else. Stock aiortc: 2 x 81 ms.
            assert sorted(rtts)[len(rtts) // 2] < 60.0
            call = next(iter(emu.state.calls.values()))
            assert call.receiver.stats.concealed == 0


async def test_client_closing_the_peer_ends_the_call() -> None:
    async with running_emulator(behaviour="tone") as emu, aiohttp.ClientSession() as http:
        async with connected_client(emu, http) as c:
            call = emu.state.calls[c.call_path.rsplit("/", 1)[1]]
        async with asyncio.timeout(10):
            await call.wait_closed()
        assert call.engine.closed
