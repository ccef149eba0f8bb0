"""Shared limits across three ``bridge serve --redis-url`` processes and one real ``redis-server``.

Hammer all three replicas at once: the allowed mints equal the configured budget (not three times it),
for the per-client bucket, the shared access token's bucket and a kiosk token's bucket. With Redis down
every replica refuses to mint (503 ``store_unavailable`` + ``Retry-After``, one log line per request)
and the upstream mints nothing; with Redis back, minting resumes.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from bridge.emulator.testing import RunningEmulator, running_emulator
from tests.fleet import Replica, metric, start_replicas, until
from tests.redis_server import RedisServer, redis_server  # noqa: F401 - the fixture

pytestmark = pytest.mark.timeout(180)

ACCESS = "fleet-shared-access-token"
RATE_BURST = 10  # per client address, refilled at one per hour: the budget of a hammering
TOKEN_BURST = 16  # per access token / kiosk token


@pytest.fixture
async def emu() -> AsyncIterator[RunningEmulator]:
    async with running_emulator() as running:
        yield running


@pytest.fixture
def fleet(redis_server: RedisServer, emu: RunningEmulator, tmp_path: Path) -> Iterator[list[Replica]]:  # noqa: F811
    args = ["--access-token", ACCESS, "--rate-burst", str(RATE_BURST), "--rate-period", "3600",
            "--token-burst", str(TOKEN_BURST), "--token-period", "3600"]  # fmt: skip
    replicas = start_replicas(
        ["a", "b", "c"], tmp_path, redis_url=redis_server.url, api_base=emu.base_url, api_key=emu.api_key,
        args=args, env={"BRIDGE_TRUST_FORWARDED": "1"},
    )  # fmt: skip
    try:
        yield replicas
    finally:
        for r in replicas:
            r.stop()


def minted(emu: RunningEmulator) -> int:
    return sum(1 for r in emu.log_events("out") if r["transport"] == "rest" and r["event"]["type"] == "client_secret")


async def hammer(
    http: aiohttp.ClientSession, replicas: list[Replica], per_replica: int, token: str, forwarded: str | None
) -> Counter[tuple[int, str]]:
    """``per_replica`` mints against every replica at once; (status, code) counts."""

    async def one(r: Replica, i: int) -> tuple[int, str]:
        headers = {"Authorization": f"Bearer {token}"}
        if forwarded is not None:
            headers["X-Forwarded-For"] = f"{forwarded}.{i % 250}.{i // 250}"
        async with http.post(f"{r.url}/api/client-secret", headers=headers) as resp:
            body = await resp.json()
            code = "ok" if resp.status == 200 else body["error"]["code"]
            if resp.status == 429:
                assert int(resp.headers["Retry-After"]) >= 1
            return resp.status, code

    jobs = [one(r, n * per_replica + i) for n, r in enumerate(replicas) for i in range(per_replica)]
    return Counter(await asyncio.gather(*jobs))


def add_kiosk(redis_url: str, name: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "bridge", "serve", "tokens", "add", name, "--redis-url", redis_url],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


async def test_mint_budgets_hold_across_three_replicas(
    fleet: list[Replica],
    emu: RunningEmulator,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    async with aiohttp.ClientSession() as http:
        # 1. One client (no X-Forwarded-For: the replicas see 127.0.0.1) hammers all three at once.
        got = await hammer(http, fleet, 30, ACCESS, None)
        assert got == {(200, "ok"): RATE_BURST, (429, "rate_limited"): 90 - RATE_BURST}, got
        assert minted(emu) == RATE_BURST

        # 2. Many clients, one shared access token: the token's bucket (16) is the budget; 10 are spent.
        got = await hammer(http, fleet, 20, ACCESS, "10.1")
        assert got == {(200, "ok"): TOKEN_BURST - RATE_BURST, (429, "token_rate_limited"): 60 - 6}, got
        assert minted(emu) == TOKEN_BURST

        # 3. A kiosk token has its own bucket of the same size.
        kiosk = add_kiosk(redis_server.url, "shop-1")
        got = await hammer(http, fleet, 20, kiosk, "10.2")
        assert got == {(200, "ok"): TOKEN_BURST, (429, "token_rate_limited"): 60 - TOKEN_BURST}, got
        assert minted(emu) == 2 * TOKEN_BURST

        # The refusals are counted by reason on the replicas that refused them; across the fleet they add up.
        texts = []
        for r in fleet:
            async with http.get(f"{r.url}/metrics") as resp:
                assert resp.status == 200 and resp.content_type == "text/plain"
                texts.append(await resp.text())
        assert sum(metric(t, "bridge_mints_total") for t in texts) == 2 * TOKEN_BURST
        assert sum(metric(t, "bridge_refusals_total", reason="rate_limited") for t in texts) == 90 - RATE_BURST
        assert sum(metric(t, "bridge_refusals_total", reason="token_rate_limited") for t in texts) == 54 + 44

        # 4. Redis down: every replica refuses (503, Retry-After), nothing is minted upstream.
        redis_server.stop()
        before = minted(emu)
        headers = {"Authorization": f"Bearer {ACCESS}", "X-Forwarded-For": "10.9.9.9"}
        for r in fleet:
            async with http.post(f"{r.url}/api/client-secret", headers=headers) as resp:
                assert resp.status == 503, await resp.text()
                assert (await resp.json())["error"]["code"] == "store_unavailable"
                assert int(resp.headers["Retry-After"]) >= 1
            async with http.get(f"{r.url}/healthz") as resp:
                assert resp.status == 503 and (await resp.json())["redis"] == "down"
        assert minted(emu) == before
        for r in fleet:
            lines = [x for x in r.err().splitlines() if "store_unavailable" in x]
            assert len(lines) == 1, lines  # one line for the one refused mint
            assert "Traceback" not in r.err() and emu.api_key not in r.err() + r.out()
            assert ACCESS not in r.err() and kiosk not in r.err()

        # 5. Redis back (same port, empty: nothing is persisted here): minting resumes without a restart.
        redis_server.start()
        for r in fleet:
            await healthy(http, r)
        got = await hammer(http, fleet, 1, ACCESS, "10.3")
        assert got == {(200, "ok"): 3}, got


async def healthy(http: aiohttp.ClientSession, r: Replica, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        async with http.get(f"{r.url}/healthz") as resp:
            if resp.status == 200:
                return
        assert loop.time() < deadline, f"replica {r.name} did not see Redis again"
        await asyncio.sleep(0.05)


async def test_healthz_and_refusal_reasons(fleet: list[Replica]) -> None:
    async with aiohttp.ClientSession() as http:
        r = fleet[0]
        async with http.get(f"{r.url}/healthz") as resp:
            body = await resp.json()
        assert resp.status == 200 and body == {"status": "ok", "replica": "a", "redis": "ok", "calls": 0}
        async with http.post(f"{r.url}/api/client-secret", headers={"Authorization": "Bearer wrong"}) as resp:
            assert resp.status == 401 and (await resp.json())["error"]["code"] == "access_token_required"
        await until(lambda: "access_token_required" in r.err(), "the request's log line", timeout=5)
