"""The Redis store's scripts against a real ``redis-server`` (tests/redis_server.py): atomic admissions,
exactly-once claims, the call registry's lifecycle, kiosks and usage; the usage parser fuzzed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.server.redis_store import RedisStore, connect
from bridge.server.store import AdmitRequest, Admitted, Beat, CallRecord, Limits, Refusal, StoreUnavailable
from bridge.server.usage import TokenUsage, prices_for
from tests.redis_server import RedisServer, free_port, redis_server  # noqa: F401 - the fixture

LIMITS = Limits(rate_burst=3, rate_period=3600, token_burst=5, token_period=3600, max_calls=2, fleet_seconds_per_day=0)


def make(url: str, replica: str, limits: Limits = LIMITS, ttl: float = 5.0) -> RedisStore:
    return RedisStore(connect(url, replica), "t", replica, limits, ttl)


@pytest.fixture
async def stores(redis_server: RedisServer) -> AsyncIterator[list[RedisStore]]:  # noqa: F811
    made = [make(redis_server.url, f"r{i}") for i in range(4)]
    try:
        yield made
    finally:
        for s in made:
            await s.aclose()


def mint(client: str, credential: str | None = "shared") -> AdmitRequest:
    return AdmitRequest("mint", client, credential, None)


async def test_admissions_are_atomic_across_clients(stores: list[RedisStore]) -> None:
    """Four replicas' connections, 200 concurrent mints of one client: exactly the burst is admitted."""
    verdicts = await asyncio.gather(*(stores[i % 4].admit(mint("1.1.1.1", None)) for i in range(200)))
    assert sum(isinstance(v, Admitted) for v in verdicts) == LIMITS.rate_burst
    refused = [v for v in verdicts if isinstance(v, Refusal)]
    assert {r.code for r in refused} == {"rate_limited"} and all(r.retry_after for r in refused)
    # The per-token bucket (5) across many clients, after 3 of its tokens went above.
    verdicts = await asyncio.gather(*(stores[i % 4].admit(mint(f"10.0.0.{i}")) for i in range(50)))
    assert sum(isinstance(v, Admitted) for v in verdicts) == LIMITS.token_burst


async def test_bucket_refills_on_redis_time(redis_server: RedisServer) -> None:  # noqa: F811
    store = make(redis_server.url, "r", Limits(1, 0.2, 100, 1.0, 1, 0))
    try:
        assert isinstance(await store.admit(mint("c", None)), Admitted)
        refused = await store.admit(mint("c", None))
        assert isinstance(refused, Refusal) and refused.retry_after == 1  # whole seconds, at least 1
        deadline = time.monotonic() + 5
        while not isinstance(await store.admit(mint("c", None)), Admitted):
            assert time.monotonic() < deadline, "the bucket never refilled"
            await asyncio.sleep(0.02)
    finally:
        await store.aclose()


async def test_call_cap_counts_pending_and_live_calls(stores: list[RedisStore]) -> None:
    a, b = stores[0], stores[1]
    call = AdmitRequest("call", "1.1.1.1", None, None, reservation="pending:1")
    assert isinstance(await a.admit(call), Admitted)
    assert isinstance(await b.admit(AdmitRequest("call", "2.2.2.2", None, None, reservation="pending:2")), Admitted)
    third = await b.admit(AdmitRequest("call", "3.3.3.3", None, None, reservation="pending:3"))
    assert isinstance(third, Refusal) and third.code == "too_many_calls"
    await b.cancel("pending:2", None)
    await a.register(CallRecord("rtc_1", "r0", "triage", 0.0, model="gpt-realtime"), "pending:1", "tok-a")
    assert isinstance(await b.admit(AdmitRequest("call", "3.3.3.3", None, None, reservation="pending:3")), Admitted)
    assert not isinstance(await b.admit(AdmitRequest("call", "4.4.4.4", None, None, reservation="p4")), Admitted)
    # Any replica may end a call once it is hung up upstream; the slot frees; ending twice is a no-op.
    assert await b.end("rtc_1", None) and not await a.end("rtc_1", "tok-a")
    assert await a.get("rtc_1") is None
    assert isinstance(await b.admit(AdmitRequest("call", "4.4.4.4", None, None, reservation="p4")), Admitted)


async def test_exactly_one_replica_takes_an_orphan(redis_server: RedisServer) -> None:  # noqa: F811
    owner = make(redis_server.url, "owner", ttl=0.3)
    others = [make(redis_server.url, f"r{i}", ttl=5.0) for i in range(5)]
    try:
        await owner.register(CallRecord("rtc_1", "owner", "korean_20s", time.time(), "shop"), "p", "tok-owner")
        assert await asyncio.gather(*(o.claim_orphan(f"tok{i}") for i, o in enumerate(others))) == [None] * 5
        assert await owner.heartbeat([Beat("rtc_1", "tok-owner")]) == [True]
        deadline = time.monotonic() + 5
        claimed: list[CallRecord | None] = [None]
        while not any(claimed):  # the owner stops beating: its lock lapses after 0.3 s
            assert time.monotonic() < deadline
            claimed = list(await asyncio.gather(*(o.claim_orphan(f"tok{i}") for i, o in enumerate(others))))
            await asyncio.sleep(0.01)
        winners = [(i, c) for i, c in enumerate(claimed) if c is not None]
        assert len(winners) == 1
        i, record = winners[0]
        assert (record.call_id, record.agent, record.owner, record.kiosk, record.state) == (
            "rtc_1", "korean_20s", "owner", "shop", "live",
        )  # fmt: skip
        # The old owner learns it lost the call at its next beat and may not end it.
        assert await owner.heartbeat([Beat("rtc_1", "tok-owner")]) == [False]
        assert not await owner.end("rtc_1", "tok-owner")
        assert await others[i].mark_attached("rtc_1", f"tok{i}")
        got = await others[0].get("rtc_1")
        assert got is not None and got.owner == f"r{i}" and got.state == "live"
        # A graceful release is announced on the channel and the call is free at once.
        listener = others[(i + 1) % 5]
        assert not await listener.wait_handover(0.05)  # subscribes
        assert await others[i].release("rtc_1", f"tok{i}")
        assert await listener.wait_handover(2.0)
        again = await listener.claim_orphan("tok-again")
        assert again is not None and again.state == "handover"
    finally:
        for s in [owner, *others]:
            await s.aclose()


async def test_each_tool_call_is_claimed_once_and_agent_follows_the_winner(stores: list[RedisStore]) -> None:
    await stores[0].register(CallRecord("rtc_1", "r0", "triage", time.time()), "p", "tok")
    results = await asyncio.gather(*(s.claim_tool_call("rtc_1", "call_x") for s in stores))
    assert sorted(won for won, _ in results) == [False, False, False, True]
    assert {agent for _, agent in results} == {"triage"}
    winner = next(s for s, (won, _) in zip(stores, results, strict=True) if won)
    loser = next(s for s in stores if s is not winner)
    await loser.set_agent("rtc_1", "call_x", "nobody")  # only the winner of the handoff's call writes
    await winner.set_agent("rtc_1", "call_x", "empathetic")
    assert (await stores[0].claim_tool_call("rtc_1", "call_y")) == (True, "empathetic")


async def test_kiosks_usage_and_minutes(redis_server: RedisServer) -> None:  # noqa: F811
    store = make(redis_server.url, "r", Limits(100, 1.0, 100, 1.0, 10, fleet_seconds_per_day=3600))
    try:
        assert await store.add_kiosk("shop-1", "h1", 1, 0.2)
        assert not await store.add_kiosk("shop-1", "h2", 1, 0.2)  # exists
        ok = await store.admit(AdmitRequest("call", "c1", None, "h1", "p1", anonymous_ok=False))
        assert ok == Admitted("shop-1")
        busy = await store.admit(AdmitRequest("call", "c2", None, "h1", "p2", anonymous_ok=False))
        assert isinstance(busy, Refusal) and busy.code == "kiosk_busy"
        unknown = await store.admit(AdmitRequest("mint", "c3", None, "nope", anonymous_ok=False))
        assert isinstance(unknown, Refusal) and unknown.status == 401
        assert await store.admit(AdmitRequest("mint", "c3", None, "nope", anonymous_ok=True)) == Admitted(None)
        await store.register(CallRecord("rtc_k", "r", "triage", time.time(), "shop-1", model="gpt-realtime"), "p1", "t")
        used = TokenUsage(text_in=1000, audio_out=2000)
        deadline = time.monotonic() + 5
        while True:  # 0.2 s of call time a day: the heartbeat accrues it
            await store.heartbeat([Beat("rtc_k", "t", used, used.cost_micro_usd("gpt-realtime"))])
            used = TokenUsage()
            over = await store.admit(AdmitRequest("mint", "c4", None, "h1"))
            if isinstance(over, Refusal):
                break
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        assert over.code == "kiosk_minutes_exhausted" and over.retry_after is not None and over.retry_after > 0
        assert await store.whois("h1") == "shop-1"
        assert await store.revoke_kiosk("shop-1") and not await store.revoke_kiosk("ghost")
        revoked = await store.admit(AdmitRequest("mint", "c5", None, "h1"))
        assert isinstance(revoked, Refusal) and (revoked.status, revoked.code) == (403, "kiosk_revoked")
        rows = {k.name: k for k in await store.kiosks(time.time())}
        shop = rows["shop-1"].today
        assert rows["shop-1"].revoked and shop["calls"] == 1 and shop["call_seconds"] >= 0.2
        assert shop["text_in"] == 1000 and shop["audio_out"] == 2000
        assert shop["cost_micro_usd"] == 1000 * 4 + 2000 * 64  # $4 and $64 per 1M tokens
        assert rows["_fleet"].today["mints"] == 1 + shop["mints"]  # + the anonymous one; refusals are no usage
    finally:
        await store.aclose()


async def test_unreachable_redis_is_store_unavailable_fast() -> None:
    store = make(f"redis://127.0.0.1:{free_port()}/0", "r")
    try:
        t0 = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await store.admit(mint("c"))
        with pytest.raises(StoreUnavailable):
            await store.ping()
        assert time.monotonic() - t0 < 2.0
    finally:
        await store.aclose()


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=25), inner, max_size=6),
    max_leaves=30,
)
_usage_keys = st.sampled_from(
    ["input_token_details", "output_token_details", "cached_tokens_details", "text_tokens", "audio_tokens",
     "input_tokens", "output_tokens", "cached_tokens"]
)  # fmt: skip
_usage_like = st.recursive(
    st.integers(-5, 10**13) | st.none() | st.text(max_size=3) | st.booleans(),
    lambda inner: st.dictionaries(_usage_keys, inner, max_size=5),
    max_leaves=20,
)


@given(st.one_of(_json, _usage_like))
def test_usage_from_network_input_never_raises(raw: Any) -> None:
    """``response.done`` usage is network input: any shape parses to non-negative counts, never raises."""
    usage = TokenUsage.from_response(raw)
    assert all(v >= 0 for v in (usage.text_in, usage.audio_in, usage.text_out, usage.audio_out))
    assert usage.cost_micro_usd("gpt-realtime") >= 0


def test_usage_of_a_real_response_done() -> None:
    raw = {  # PROTOCOL.md's WebRTC trace: total 127, input 120 (cached 64), output 7
        "total_tokens": 127, "input_tokens": 120, "output_tokens": 7,
        "input_token_details": {"text_tokens": 120, "audio_tokens": 0, "cached_tokens": 64,
                                "cached_tokens_details": {"text_tokens": 64, "audio_tokens": 0}},
        "output_token_details": {"text_tokens": 2, "audio_tokens": 5},
    }  # fmt: skip
    u = TokenUsage.from_response(raw)
    assert (u.text_in, u.text_cached, u.text_out, u.audio_out, u.input_tokens) == (56, 64, 2, 5, 120)
    assert u.cost_micro_usd("gpt-realtime") == round(56 * 4 + 64 * 0.4 + 2 * 16 + 5 * 64)
    assert prices_for("gpt-realtime-2025-08-28") == prices_for("gpt-realtime")
    assert prices_for("gpt-realtime-mini-2025-10-06") != prices_for("gpt-realtime")
    assert prices_for("whisper-1") is None and u.cost_micro_usd("whisper-1") == 0


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(client=st.text(min_size=1, max_size=80), credential=st.text(max_size=40))
def test_admit_takes_any_client_string(redis_server: RedisServer, client: str, credential: str) -> None:  # noqa: F811
    """Client keys come from the network (X-Forwarded-For): any string is its own bucket, never an error."""

    async def run() -> None:
        store = make(redis_server.url, "r")
        try:
            await aioredis.Redis.from_url(redis_server.url).flushdb()
            verdicts = [await store.admit(mint(client, credential or None)) for _ in range(4)]
            assert [isinstance(v, Admitted) for v in verdicts] == [True, True, True, False]
        finally:
            await store.aclose()

    asyncio.run(run())
