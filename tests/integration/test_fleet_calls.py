"""Agent calls across a fleet: ``bridge serve --redis-url --agents`` processes, one real ``redis-server``,
the emulator on 127.0.0.1 acting out the Korean set's script (triage -> korean_20s -> empathetic, with a
tool call), and a browser-like aiortc peer per call.

- the fleet-wide call cap holds across replicas; any replica hangs up a call another one created;
- per-kiosk tokens: the kiosk's own call cap, revocation, its call minutes per day, its usage;
- ``kill -9`` of the replica running a call's agents mid-conversation: another replica takes the call's
  sideband over within the lock's TTL, with the active agent and its tools; the next handoff and tool
  call are answered exactly once; the emulator never sees two sidebands at once;
- SIGTERM: the replica releases the call at once and keeps answering until its successor is attached;
  a function call made during the handover is answered exactly once (no gap, no double answer).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from bridge.agents import load_agents
from bridge.emulator.testing import RunningEmulator, running_emulator
from bridge.rtc.loopback import loopback_candidates
from tests.fleet import Browser, Replica, metric, start_replicas, until
from tests.helpers import active_agents
from tests.redis_server import RedisServer, redis_server  # noqa: F401 - the fixture

pytestmark = pytest.mark.timeout(240)

ROOT = Path(__file__).resolve().parents[2]
AGENTS = ROOT / "examples" / "agents" / "korean" / "agents.toml"
SCRIPT = ROOT / "examples" / "agents" / "korean" / "emulator_script.toml"
TURNS = {  # response index -> what the user types before it
    0: "안녕하세요, 저는 스물네 살이에요.",
    2: "사실 요즘 취업 준비 때문에 너무 불안하고 우울해요.",
    4: "한 70 정도요.",
}
EXPECTED_AGENT = ["triage", "korean_20s", "korean_20s", "empathetic", "empathetic", "empathetic"]
TOOL_CALLS = {"call_handoff_korean", "call_handoff_empathetic", "call_score_before"}


class PeakSet(set[Any]):
    """The emulator's set of open WebSockets (only sidebands here: the browser is WebRTC), remembering
    its largest size: two sidebands at once on one call would show as 2."""

    def __init__(self) -> None:
        super().__init__()
        self.peak = 0

    def add(self, item: Any) -> None:
        super().add(item)
        self.peak = max(self.peak, len(self))


@pytest.fixture
async def emu() -> AsyncIterator[RunningEmulator]:
    async with running_emulator(behaviour=f"script:{SCRIPT}", think_ms=20, speed=20.0) as running:
        running.state.sockets = PeakSet()
        yield running


@pytest.fixture
async def db(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:  # noqa: F811
    client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        yield client
    finally:
        await client.aclose()


def fleet(names: list[str], tmp: Path, redis: RedisServer, emu: RunningEmulator, *args: str) -> Iterator[list[Replica]]:
    replicas = start_replicas(
        names, tmp, redis_url=redis.url, api_base=emu.base_url, api_key=emu.api_key,
        args=["--agents", str(AGENTS), "-v", *args],
    )  # fmt: skip
    try:
        yield replicas
    finally:
        for r in replicas:
            r.stop()


def count(emu: RunningEmulator, event_type: str) -> int:
    return sum(1 for e in emu.server_events() if e["type"] == event_type)


def tool_outputs(emu: RunningEmulator) -> Counter[str]:
    """How many times each function call was answered (the conversation's function_call_output items)."""
    return Counter(
        e["item"]["call_id"]
        for e in emu.server_events()
        if e["type"] == "conversation.item.done" and e["item"].get("type") == "function_call_output"
    )


async def say_turn(emu: RunningEmulator, browser: Browser, index: int) -> None:
    """Wait until the model finished the previous turn (and its audio played), then type turn ``index``."""
    await until(lambda: count(emu, "response.done") >= index, f"response {index}")
    await until(lambda: count(emu, "output_audio_buffer.stopped") >= index // 2, "the reply heard")
    browser.say(TURNS[index])


def transcript(replica: Replica, call_id: str) -> list[dict[str, Any]]:
    paths = list(replica.transcripts.glob(f"*-{call_id}.jsonl"))
    return [json.loads(x) for p in paths for x in p.read_text(encoding="utf-8").splitlines()]


async def get_metrics(http: aiohttp.ClientSession, r: Replica) -> str:
    async with http.get(f"{r.url}/metrics") as resp:
        return await resp.text()


async def start_call(http: aiohttp.ClientSession, browser: Browser, r: Replica) -> str:
    status, answer, headers = await browser.call(http, r.url)
    assert status == 201, answer
    await browser.answer(answer)
    return headers["X-Call-Id"]


# ---- cap, hangup, kiosks ---------------------------------------------------------------------------------


async def test_call_cap_and_hangup_across_replicas(
    emu: RunningEmulator,
    redis_server: RedisServer,  # noqa: F811
    db: aioredis.Redis,
    tmp_path: Path,
) -> None:
    replicas = fleet(["a", "b", "c"], tmp_path, redis_server, emu, "--max-calls", "2")
    a, b, c = next(replicas)
    browsers = [Browser() for _ in range(3)]
    try:
        with loopback_candidates():
            async with aiohttp.ClientSession() as http:
                first = await start_call(http, browsers[0], a)
                await start_call(http, browsers[1], b)
                status, body, headers = await browsers[2].call(http, c.url)
                assert status == 429 and json.loads(body)["error"]["code"] == "too_many_calls", body
                assert headers["Retry-After"] == "60"
                assert len(emu.state.calls) == 2
                assert (await db.hgetall(f"bridge:call:{first}"))["owner"] == "a"

                # C never saw this call, yet hangs it up: upstream by call id, and the registry frees its slot.
                status, ended = await browsers[0].hangup(http, c.url, first)
                assert status == 200 and ended == {"call_id": first, "ended": True}
                assert first not in emu.state.calls
                await until(lambda: f"call {first} ended after" in a.err(), "A's sideband to end")
                async with http.get(f"{a.url}/healthz") as resp:
                    assert (await resp.json())["calls"] == 0
                status, ended = await browsers[0].hangup(http, b.url, first)
                assert status == 404 and ended["error"]["code"] == "call_not_found"
                assert (await browsers[2].call(http, c.url))[0] == 201  # the freed slot
                assert await db.zcard("bridge:calls") == 2
                assert f"POST /api/call/{first}/hangup 200" in c.err()
    finally:
        for br in browsers:
            await br.close()
        replicas.close()  # stops the replicas (the generator's finally)


async def test_kiosk_tokens_caps_revocation_and_usage(
    emu: RunningEmulator,
    redis_server: RedisServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    def tokens(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "bridge", "serve", "tokens", *args, "--redis-url", redis_server.url],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip

    added = tokens("add", "shop-1", "--max-calls", "1", "--minutes-per-day", "0.03")  # 1.8 s a day
    assert added.returncode == 0, added.stderr
    token = added.stdout.strip()
    assert token.startswith("bk_") and len(token) == 46 and "shown only now" in added.stderr
    assert tokens("add", "shop-1").returncode == 1  # exists
    other = tokens("add", "shop-2").stdout.strip()

    replicas = fleet(["a", "b"], tmp_path, redis_server, emu, "--require-token")
    a, b = next(replicas)
    browsers = [Browser(token), Browser(token), Browser(other), Browser(None)]
    try:
        with loopback_candidates():
            async with aiohttp.ClientSession() as http:
                assert (await browsers[3].call(http, a.url))[0] == 401  # --require-token: no anonymous calls
                call_id = await start_call(http, browsers[0], a)
                status, body, _ = await browsers[1].call(http, b.url)
                assert status == 429 and json.loads(body)["error"]["code"] == "kiosk_busy", body
                # Another kiosk may not end shop-1's call (it does not even learn that it exists).
                assert (await browsers[2].hangup(http, b.url, call_id))[0] == 404
                # A turn, so the sideband sees response.done usage; the call runs past shop-1's 1.8 s a day.
                t0 = time.monotonic()
                await say_turn(emu, browsers[0], 0)
                await until(lambda: count(emu, "response.done") >= 2, "the first turn's responses")
                await asyncio.sleep(max(0.0, 2.5 - (time.monotonic() - t0)))
                assert (await browsers[0].hangup(http, b.url, call_id))[0] == 200
                status, body, _ = await browsers[1].call(http, a.url)
                assert status == 429 and json.loads(body)["error"]["code"] == "kiosk_minutes_exhausted", body
                assert (await browsers[2].call(http, b.url))[0] == 201  # shop-2 is not affected

                revoked = tokens("revoke", "shop-2")
                assert revoked.returncode == 0, revoked.stderr
                async with http.post(f"{a.url}/api/client-secret", headers=browsers[2].headers(False)) as resp:
                    assert resp.status == 403 and (await resp.json())["error"]["code"] == "kiosk_revoked"

        listing = tokens("list", "--json")
        assert listing.returncode == 0, listing.stderr
        rows = {r["name"]: r for r in json.loads(listing.stdout)["kiosks"]}
        assert rows["shop-1"]["max_calls"] == 1 and not rows["shop-1"]["revoked"] and rows["shop-2"]["revoked"]
        shop1 = rows["shop-1"]["today"]
        assert shop1["calls"] == 1 and 2.0 <= shop1["call_seconds"] < 10
        assert shop1["cost_micro_usd"] > 0 and shop1["text_in"] > 0  # response.done usage from the sideband
        assert rows["_fleet"]["today"]["calls"] == 2
        table = tokens("list")
        assert table.returncode == 0 and "shop-1" in table.stdout and "revoked" in table.stdout
        for r in (a, b):
            assert token not in r.err() and other not in r.err() and emu.api_key not in r.err()
    finally:
        for br in browsers:
            await br.close()
        replicas.close()  # stops the replicas (the generator's finally)


# ---- takeover ---------------------------------------------------------------------------------------------


async def test_kill_9_mid_conversation_another_replica_takes_over(
    emu: RunningEmulator,
    redis_server: RedisServer,  # noqa: F811
    db: aioredis.Redis,
    tmp_path: Path,
) -> None:
    ttl = 2.0
    agents = load_agents(AGENTS)
    replicas = fleet(["a", "b", "c"], tmp_path, redis_server, emu, "--call-ttl", str(ttl))
    a, b, c = next(replicas)
    browser = Browser()
    try:
        with loopback_candidates():
            async with aiohttp.ClientSession() as http:
                call_id = await start_call(http, browser, a)
                await say_turn(emu, browser, 0)
                await until(lambda: count(emu, "response.done") >= 2, "the handoff to korean_20s and its reply")
                assert tool_outputs(emu) == {"call_handoff_korean": 1}
                assert (await db.hgetall(f"bridge:call:{call_id}"))["agent"] == "korean_20s"

                a.kill()
                t_kill = time.monotonic()
                taken = {"owner": "", "state": ""}

                async def poll() -> None:
                    while taken["owner"] in ("", "a") or taken["state"] != "live":
                        taken.update(await db.hgetall(f"bridge:call:{call_id}"))
                        await asyncio.sleep(0.01)

                await asyncio.wait_for(poll(), ttl * 3)
                takeover_s = time.monotonic() - t_kill
                new = b if taken["owner"] == "b" else c
                other = c if new is b else b
                # Within the lock's TTL after A's last heartbeat, plus one orphan scan and the attach.
                assert takeover_s < ttl + ttl / 6 + 1.0, takeover_s
                # The new sideband restored the active agent: korean_20s's instructions and tools.
                (engine,) = emu.state.engines
                assert engine.session["instructions"] == agents.instructions_for("korean_20s")

                await say_turn(emu, browser, 2)
                await say_turn(emu, browser, 4)
                await until(lambda: count(emu, "response.done") >= 6, "all six responses")

        errors = [e for e in emu.server_events() if e["type"] == "error"]
        assert not errors, errors
        assert tool_outputs(emu) == dict.fromkeys(TOOL_CALLS, 1)  # each answered once, none lost
        assert active_agents(emu, agents) == EXPECTED_AGENT
        assert emu.state.sockets.peak == 1, "two sidebands were attached to the call at once"
        lines = transcript(new, call_id)
        assert [(x["from"], x["to"]) for x in lines if x["kind"] == "handoff"] == [("korean_20s", "empathetic")]
        assert [x["name"] for x in lines if x["kind"] == "tool"] == ["record_emotion_score"]
        assert not transcript(other, call_id)
        async with aiohttp.ClientSession() as http:
            assert metric(await get_metrics(http, new), "bridge_takeovers_total", kind="orphan") == 1
            assert metric(await get_metrics(http, other), "bridge_takeovers_total", kind="orphan") == 0
        assert (await db.hgetall(f"bridge:call:{call_id}"))["agent"] == "empathetic"
    finally:
        await browser.close()
        replicas.close()  # stops the replicas (the generator's finally)


async def test_sigterm_hands_over_with_no_gap_in_tool_answers(
    emu: RunningEmulator,
    redis_server: RedisServer,  # noqa: F811
    db: aioredis.Redis,
    tmp_path: Path,
) -> None:
    ttl = 10.0  # a takeover by lapse would take >= 10 s: the handover must not wait for it
    agents = load_agents(AGENTS)
    replicas = fleet(["a", "b"], tmp_path, redis_server, emu, "--call-ttl", str(ttl))
    a, b = next(replicas)
    browser = Browser()
    try:
        with loopback_candidates():
            async with aiohttp.ClientSession() as http:
                call_id = await start_call(http, browser, a)
                await say_turn(emu, browser, 0)
                await until(lambda: count(emu, "response.done") >= 2, "the handoff to korean_20s and its reply")
                await until(lambda: count(emu, "output_audio_buffer.stopped") >= 1, "the reply heard")

                # SIGTERM, and the user speaks at once: the model's handoff call arrives mid-handover.
                a.term()
                t_term = time.monotonic()
                browser.say(TURNS[2])

                async def owner() -> dict[str, str]:
                    return dict(await db.hgetall(f"bridge:call:{call_id}"))

                record: dict[str, str] = {}
                while not (record.get("owner") == "b" and record.get("state") == "live"):
                    assert time.monotonic() - t_term < ttl / 2, f"no handover: {record}"
                    record = await owner()
                    await asyncio.sleep(0.005)
                handover_s = time.monotonic() - t_term
                assert await asyncio.to_thread(a.proc.wait, 15) == 0
                assert "handed over to b" in a.err(), a.err()[-2000:]

                await until(lambda: count(emu, "response.done") >= 4, "the empathetic agent's reply")
                await say_turn(emu, browser, 4)
                await until(lambda: count(emu, "response.done") >= 6, "all six responses")

        errors = [e for e in emu.server_events() if e["type"] == "error"]
        assert not errors, errors
        assert tool_outputs(emu) == dict.fromkeys(TOOL_CALLS, 1)  # the mid-handover handoff answered once
        assert active_agents(emu, agents) == EXPECTED_AGENT
        assert handover_s < 2.0, handover_s
        tools_b = [x["name"] for x in transcript(b, call_id) if x["kind"] == "tool"]
        assert tools_b == ["record_emotion_score"]
        async with aiohttp.ClientSession() as http:
            assert metric(await get_metrics(http, b), "bridge_takeovers_total", kind="handover") == 1
        assert (await db.hgetall(f"bridge:call:{call_id}"))["agent"] == "empathetic"
    finally:
        await browser.close()
        replicas.close()  # stops the replicas (the generator's finally)


async def test_sigterm_keeps_answering_until_a_successor_attaches(
    emu: RunningEmulator,
    redis_server: RedisServer,  # noqa: F811
    db: aioredis.Redis,
    tmp_path: Path,
) -> None:
    """No replica to hand over to yet: the leaving replica must keep answering (a handoff made now), then
    let go as soon as a new replica has attached - no gap even when the successor comes late."""
    agents = load_agents(AGENTS)
    first = fleet(["a"], tmp_path, redis_server, emu, "--call-ttl", "10", "--handover-wait", "30")
    (a,) = next(first)
    second = None
    browser = Browser()
    try:
        with loopback_candidates():
            async with aiohttp.ClientSession() as http:
                call_id = await start_call(http, browser, a)
                await say_turn(emu, browser, 0)
                await until(lambda: count(emu, "response.done") >= 2, "the handoff to korean_20s and its reply")
                a.term()
                state: dict[str, str] = {}

                async def released() -> None:
                    while state.get("state") != "handover":
                        state.update(await db.hgetall(f"bridge:call:{call_id}"))
                        await asyncio.sleep(0.005)

                await asyncio.wait_for(released(), 10)
                await say_turn(emu, browser, 2)  # the handoff call arrives while A is leaving, B not there
                await until(lambda: count(emu, "response.done") >= 4, "the empathetic agent's reply")
                assert tool_outputs(emu) == {"call_handoff_korean": 1, "call_handoff_empathetic": 1}
                assert a.alive()

                # (in a thread: this event loop also runs the emulator, which B must reach)
                second = fleet(["b"], tmp_path, redis_server, emu, "--call-ttl", "10")
                await asyncio.to_thread(next, second)
                assert await asyncio.to_thread(a.proc.wait, 20) == 0
                assert (await db.hgetall(f"bridge:call:{call_id}"))["owner"] == "b"
                await say_turn(emu, browser, 4)
                await until(lambda: count(emu, "response.done") >= 6, "all six responses")
        assert tool_outputs(emu) == dict.fromkeys(TOOL_CALLS, 1)
        assert active_agents(emu, agents) == EXPECTED_AGENT
    finally:
        await browser.close()
        first.close()
        if second is not None:
            second.close()


class OneSidebandCalls(dict[str, Any]):
    """The emulator's call table, made to refuse a second sideband on a call while one is attached (the
    real API's behaviour here is UNCONFIRMED, PROTOCOL.md 2.4): its sideband handler looks the call up
    with ``get`` after adding the new socket, so two open sockets mean a second sideband."""

    def __init__(self, emu: RunningEmulator) -> None:
        super().__init__(emu.state.calls)
        self._emu = emu
        self.refused = 0

    def get(self, key: str, default: Any = None) -> Any:
        if len(self._emu.state.sockets) >= 2:
            self.refused += 1
            return default
        return super().get(key, default)


async def test_handover_when_the_api_allows_one_sideband_per_call(
    emu: RunningEmulator,
    redis_server: RedisServer,  # noqa: F811
    db: aioredis.Redis,
    tmp_path: Path,
) -> None:
    """The successor is refused while the leaving replica is attached: it must not end the call, but
    retry and attach once the leaving replica has let go (after --handover-wait)."""
    agents = load_agents(AGENTS)
    replicas = fleet(["a", "b"], tmp_path, redis_server, emu, "--call-ttl", "10", "--handover-wait", "2")
    a, b = next(replicas)
    browser = Browser()
    try:
        with loopback_candidates():
            async with aiohttp.ClientSession() as http:
                call_id = await start_call(http, browser, a)
                table = OneSidebandCalls(emu)
                emu.state.calls = table
                await say_turn(emu, browser, 0)
                await until(lambda: count(emu, "response.done") >= 2, "the handoff to korean_20s and its reply")
                a.term()
                record: dict[str, str] = {}
                t0 = time.monotonic()
                while not (record.get("owner") == "b" and record.get("state") == "live"):
                    assert time.monotonic() - t0 < 10, f"no takeover: {record}"
                    record = dict(await db.hgetall(f"bridge:call:{call_id}"))
                    await asyncio.sleep(0.01)
                assert table.refused >= 1  # B was refused at least once while A was still attached
                assert await asyncio.to_thread(a.proc.wait, 15) == 0
                assert call_id in emu.state.calls  # the call was never hung up or ended
                await say_turn(emu, browser, 2)
                await say_turn(emu, browser, 4)
                await until(lambda: count(emu, "response.done") >= 6, "all six responses")
        assert tool_outputs(emu) == dict.fromkeys(TOOL_CALLS, 1)
        assert active_agents(emu, agents) == EXPECTED_AGENT
        assert [x["name"] for x in transcript(b, call_id) if x["kind"] == "tool"] == ["record_emotion_score"]
    finally:
        await browser.close()
        replicas.close()  # stops the replicas (the generator's finally)
