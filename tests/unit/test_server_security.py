"""Token-server pieces that need no upstream: settings, rate limiter, origin/token checks, redaction,
headers and static files (the app runs on a real loopback port via aiohttp's TestServer)."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from bridge.errors import ConfigError
from bridge.server import ServerSettings, make_app
from bridge.server.mint import public_session, redact
from bridge.server.security import RateLimiter
from bridge.server.settings import normalize_origin

KEY = "sk-unit-SECRET-0123456789abcdef"


def settings(**kw: object) -> ServerSettings:
    base: dict[str, object] = {"api_key": KEY, "api_base": "http://127.0.0.1:9/v1"}
    base.update(kw)
    return ServerSettings(**base)  # type: ignore[arg-type]


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_rate_limiter_burst_then_refill() -> None:
    clock = FakeClock()
    rl = RateLimiter(burst=3, period=10.0, clock=clock)
    assert [rl.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert rl.take("a") == pytest.approx(10.0)
    assert rl.take("b") == 0.0  # buckets are per client
    clock.now = 5.0
    assert rl.take("a") == pytest.approx(5.0)
    clock.now = 10.0
    assert rl.take("a") == 0.0
    assert rl.refused == 2


def test_rate_limiter_table_is_bounded() -> None:
    rl = RateLimiter(burst=1, period=60.0, max_clients=100, clock=FakeClock())
    for i in range(250):
        rl.take(f"10.0.0.{i}")
    assert len(rl._buckets) == 100
    assert rl.evicted == 150


def test_settings_validate_and_hide_secrets() -> None:
    with pytest.raises(ConfigError):
        settings(key_ttl=5)
    with pytest.raises(ConfigError):
        settings(key_ttl=7201)
    s = settings(access_token="tok-SECRET")
    assert KEY not in repr(s) and "tok-SECRET" not in repr(s)
    assert s.upstream_calls_url == "http://127.0.0.1:9/v1/realtime/calls"
    assert s.api_origin == "http://127.0.0.1:9"


def test_session_config_carries_server_side_choices() -> None:
    s = settings(model="gpt-realtime-mini", voice="cedar", instructions="Be brief.", transcription_language="ko")
    cfg = s.session_config()
    assert cfg["type"] == "realtime" and cfg["model"] == "gpt-realtime-mini"
    assert cfg["instructions"] == "Be brief."
    assert cfg["audio"]["output"]["voice"] == "cedar"
    assert cfg["audio"]["input"]["transcription"]["language"] == "ko"
    assert cfg["audio"]["input"]["turn_detection"]["type"] == "server_vad"
    assert "language" not in settings().session_config()["audio"]["input"]["transcription"]


def test_normalize_origin() -> None:
    assert normalize_origin("HTTPS://Example.com:8443/") == "https://example.com:8443"
    assert normalize_origin("null") is None
    assert normalize_origin("https://example.com/path") is None
    assert normalize_origin("ftp://example.com") is None


def test_redact_and_public_session() -> None:
    text = f"Incorrect API key provided: sk-ab***yz and {KEY} and ek_0123456789abcdef"
    cleaned = redact(text, KEY)
    assert "sk-" not in cleaned and "ek_" not in cleaned and KEY not in cleaned
    session = {
        "id": "sess_1",
        "type": "realtime",
        "model": "gpt-realtime",
        "instructions": "private prompt",
        "tools": [{"type": "function", "name": "secret_tool"}],
        "audio": {"input": {"transcription": {"model": "whisper-1", "language": "ko"}}, "output": {"voice": "marin"}},
    }
    public = public_session(session)
    assert public["voice"] == "marin" and public["transcription"]["language"] == "ko"
    assert "private prompt" not in str(public) and "secret_tool" not in str(public)


@pytest.fixture
async def client(tmp_path: Path):  # type: ignore[no-untyped-def]
    (tmp_path / "index.html").write_text("<!doctype html><title>t</title>")
    (tmp_path / "js").mkdir()
    (tmp_path / "js" / "ui.js").write_text("export {};")
    (tmp_path / "secret.txt").write_text("not served")
    app = make_app(settings(web_root=tmp_path, access_token="tok-1", rate_burst=2, rate_period=60.0))
    async with TestClient(TestServer(app, host="127.0.0.1")) as c:
        yield c


async def test_static_files_mime_and_headers(client: TestClient) -> None:
    resp = await client.get("/")
    assert resp.status == 200 and resp.content_type == "text/html"
    csp = resp.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "'unsafe-inline'" not in csp
    assert "frame-ancestors 'none'" in csp and "connect-src 'self' http://127.0.0.1:9" in csp
    assert resp.headers["Referrer-Policy"] == "no-referrer"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    js = await client.get("/js/ui.js")
    assert js.status == 200 and js.content_type == "text/javascript"
    for path in ("/secret.txt", "/../settings.py", "/js/%2e%2e/secret.txt", "/nope.js"):
        r = await client.get(path)
        assert r.status == 404, path
        assert r.headers["X-Content-Type-Options"] == "nosniff"


async def test_config_reports_token_requirement(client: TestClient) -> None:
    resp = await client.get("/api/config")
    assert resp.status == 200
    assert (await resp.json())["access_token_required"] is True
    assert resp.headers["Cache-Control"] == "no-store"


async def test_mint_refusals_before_upstream(client: TestClient) -> None:
    r = await client.post("/api/client-secret")
    assert r.status == 401 and (await r.json())["error"]["code"] == "access_token_required"
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    r = await client.post("/api/client-secret", headers={"Authorization": "Bearer wrong"})
    assert r.status == 401
    r = await client.post(
        "/api/client-secret", headers={"Authorization": "Bearer tok-1", "Origin": "https://evil.example"}
    )
    assert r.status == 403 and (await r.json())["error"]["code"] == "origin_not_allowed"
    r = await client.post("/api/client-secret", headers={"Authorization": "Bearer tok-1"}, data=b"x" * 10_000)
    assert r.status == 413
    r = await client.get("/api/client-secret")
    assert r.status == 405 and (await r.json())["error"]["code"] == "method_not_allowed"
    assert r.headers["Content-Security-Policy"]


async def test_forwarded_for_only_when_trusted(tmp_path: Path) -> None:
    """Behind a proxy the bucket follows X-Forwarded-For; otherwise a client cannot pick its own bucket."""
    for trusted, expected in ((False, [200, 429, 429]), (True, [200, 200, 429])):
        app = make_app(settings(web_root=tmp_path, rate_burst=1, rate_period=60.0, trust_forwarded=trusted))
        async with TestClient(TestServer(app, host="127.0.0.1")) as c:
            statuses = []
            for forwarded in ("10.0.0.1", "10.0.0.2", "10.0.0.2"):
                r = await c.post("/api/client-secret", headers={"X-Forwarded-For": f"6.6.6.6, {forwarded}"})
                statuses.append(429 if r.status == 429 else 200)  # 502 here: upstream is a closed port
            assert statuses == expected, trusted
