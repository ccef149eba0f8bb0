"""An upstream out of quota, through our server: ``402 insufficient_quota``, which clients do not retry.

The upstream is a real aiohttp server on 127.0.0.1 answering as the Realtime API does when the account's
quota is spent (HTTP 429, ``{"error": {"type": "insufficient_quota", "code": "insufficient_quota"}}``), or
rate limited (429 ``rate_limit_exceeded``: still ``503 upstream_rate_limited``, worth another try). The
emulator's ``refuse`` fault only knows 500 and the rate limit, hence this small upstream.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient, TestServer

from bridge.agents.config import load_agents
from bridge.server import ServerSettings, make_app

ROOT = Path(__file__).resolve().parents[2]
AGENTS = ROOT / "examples" / "agents" / "korean" / "agents.toml"
KEY = "sk-quota-test-0123456789abcdef"
QUOTA = {
    "error": {
        "message": "You exceeded your current quota, please check your plan and billing details.",
        "type": "insufficient_quota",
        "param": None,
        "code": "insufficient_quota",
    }
}
RATE = {"error": {"message": "Rate limit reached.", "type": "requests", "param": None, "code": "rate_limit_exceeded"}}
OFFER = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"


class Upstream:
    """Answers every mint and call with ``self.body`` (HTTP 429); counts the requests."""

    def __init__(self) -> None:
        self.body = QUOTA
        self.hits = 0

    async def refuse(self, request: web.Request) -> web.Response:
        self.hits += 1
        await request.read()
        return web.json_response(self.body, status=429)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/realtime/client_secrets", self.refuse)
        app.router.add_post("/v1/realtime/calls", self.refuse)
        return app


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[Upstream, str]]:
    fake = Upstream()
    server = TestServer(fake.app(), host="127.0.0.1")
    await server.start_server()
    try:
        yield fake, str(server.make_url("/v1"))
    finally:
        await server.close()


async def _client(settings: ServerSettings) -> TestClient[web.Request, web.Application]:
    client = TestClient(TestServer(make_app(settings), host="127.0.0.1"))
    await client.start_server()
    return client


async def _error(resp: ClientResponse) -> tuple[int, str, str]:
    body = await resp.json()
    return resp.status, body["error"]["code"], body["error"]["message"]


async def test_mint_out_of_quota_is_402_and_a_rate_limit_stays_503(upstream: tuple[Upstream, str]) -> None:
    fake, base = upstream
    client = await _client(ServerSettings(api_key=KEY, api_base=base, rate_burst=50))
    try:
        status, code, message = await _error(await client.post("/api/client-secret"))
        assert (status, code) == (402, "insufficient_quota")
        assert "out of quota" in message and KEY not in message
        fake.body = RATE
        status, code, _ = await _error(await client.post("/api/client-secret"))
        assert (status, code) == (503, "upstream_rate_limited")
        assert fake.hits == 2
    finally:
        await client.close()


async def test_agent_call_and_relay_out_of_quota_are_402(upstream: tuple[Upstream, str], tmp_path: Path) -> None:
    _, base = upstream
    settings = ServerSettings(
        api_key=KEY, api_base=base, agents=load_agents(AGENTS), transcripts_dir=tmp_path, rate_burst=50
    )
    client = await _client(settings)
    try:
        headers = {"Content-Type": "application/sdp"}
        status, code, _ = await _error(await client.post("/api/call", data=OFFER, headers=headers))
        assert (status, code) == (402, "insufficient_quota")
    finally:
        await client.close()
    client = await _client(ServerSettings(api_key=KEY, api_base=base, relay_calls=True, rate_burst=50))
    try:
        headers = {"Content-Type": "application/sdp", "Authorization": "Bearer ek_test_0123456789"}
        status, code, _ = await _error(await client.post("/api/calls", data=OFFER, headers=headers))
        assert (status, code) == (402, "insufficient_quota")
    finally:
        await client.close()
