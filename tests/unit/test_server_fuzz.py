"""Network input to the fleet endpoints, fuzzed: any call id in a hangup path, any Authorization and
X-Forwarded-For header gets a clean JSON answer (never a 500, never a traceback), with a real app on a
loopback port (memory store) and with the Redis store (a real redis-server)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import quote

from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.agents import load_agents
from bridge.server import ServerSettings, make_app
from tests.redis_server import RedisServer, redis_server  # noqa: F401 - the fixture

ROOT = Path(__file__).resolve().parents[2]
AGENTS = load_agents(ROOT / "examples" / "agents" / "korean" / "agents.toml")
KEY = "sk-fuzz-SECRET-0123456789abcdef"

_header_text = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=120)


async def _probe(settings_: ServerSettings, call_id: str, auth: str, forwarded: str) -> list[tuple[int, str]]:
    client = TestClient(TestServer(make_app(settings_), host="127.0.0.1"))
    await client.start_server()
    out = []
    try:
        headers = {"Authorization": auth, "X-Forwarded-For": forwarded}
        for method, path in (
            ("POST", f"/api/call/{quote(call_id, safe='')}/hangup"),
            ("POST", "/api/client-secret"),
            ("GET", "/healthz"),
        ):
            resp = await client.request(method, path, headers=headers)
            text = await resp.text()
            out.append((resp.status, text))
            assert resp.status < 500 or (path == "/api/client-secret" and resp.status in (502, 503, 504)), text
            assert "Traceback" not in text and KEY not in text
            if path.startswith("/api/"):
                assert (await resp.json())["error"]["code"]
    finally:
        await client.close()
    return out


@settings(max_examples=40, deadline=None)
@given(call_id=st.text(min_size=1, max_size=200), auth=_header_text, forwarded=_header_text)
def test_any_input_gets_a_clean_answer_in_memory(call_id: str, auth: str, forwarded: str) -> None:
    s = ServerSettings(api_key=KEY, api_base="http://127.0.0.1:9/v1", agents=AGENTS, trust_forwarded=True)
    asyncio.run(_probe(s, call_id, auth, forwarded))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(call_id=st.text(min_size=1, max_size=200), auth=_header_text, forwarded=_header_text)
def test_any_input_gets_a_clean_answer_with_redis(
    redis_server: RedisServer,  # noqa: F811
    call_id: str,
    auth: str,
    forwarded: str,
) -> None:
    s = ServerSettings(
        api_key=KEY, api_base="http://127.0.0.1:9/v1", agents=AGENTS, trust_forwarded=True,
        redis_url=redis_server.url, access_token="tok-fuzz",
    )  # fmt: skip
    results = asyncio.run(_probe(s, call_id, auth, forwarded))
    assert results[0][0] in (401, 404)  # no such call (or no valid token): never found by a random id
