"""``bridge serve``'s flags and log lines: ``-v json``, the fleet settings from flags/env, JSON lines,
redaction of anything key-shaped, and one line per request from a real app on a loopback port."""

from __future__ import annotations

import argparse
import io
import json
import logging
from collections.abc import Iterator

import pytest
from aiohttp.test_utils import TestClient, TestServer

from bridge.cli import build_parser
from bridge.errors import ConfigError
from bridge.server import ServerSettings, make_app
from bridge.server.logs import ACCESS, JsonFormatter, Redact
from bridge.server.settings import from_args, token_admin_settings

KEY = "sk-unit-SECRET-0123456789abcdef"


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["serve", *argv])


def test_verbosity_and_json_flag() -> None:
    assert parse().verbose == 0
    assert parse("-v").verbose == 1
    assert parse("-vv").verbose == 2
    args = parse("-v", "json", "--port", "0")
    assert args.log_format == "json" and args.verbose == 1
    with pytest.raises(SystemExit):
        parse("-v", "loud")
    tokens = parse("tokens", "add", "shop-1", "--max-calls", "3", "--redis-url", "redis://127.0.0.1:1/0")
    assert tokens.serve_command == "tokens" and tokens.tokens_command == "add"
    assert tokens.max_calls == 3


def test_fleet_settings_from_flags_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("BRIDGE_REDIS_URL", "BRIDGE_LOG_FORMAT", "BRIDGE_CALL_TTL", "BRIDGE_REDIS_PREFIX"):
        monkeypatch.delenv(name, raising=False)
    s = from_args(parse(), KEY, "http://127.0.0.1:9/v1", offline=False)
    assert s.redis_url is None and not s.fleet and not s.log_json and s.call_ttl == 15.0
    monkeypatch.setenv("BRIDGE_REDIS_URL", "redis://:pw-SECRET@127.0.0.1:6379/2")
    monkeypatch.setenv("BRIDGE_LOG_FORMAT", "json")
    monkeypatch.setenv("BRIDGE_CALL_TTL", "4")
    s = from_args(parse("--replica-id", "r7"), KEY, "http://127.0.0.1:9/v1", offline=False)
    assert s.fleet and s.log_json and s.call_ttl == 4.0 and s.replica_id == "r7"
    assert "pw-SECRET" not in repr(s) and KEY not in repr(s)
    s = from_args(parse("--redis-url", "redis://other:1/0"), KEY, "http://x/v1", offline=False)
    assert s.redis_url == "redis://other:1/0"  # a flag beats the environment
    with pytest.raises(ConfigError, match="--redis-url"):
        ServerSettings(api_key=KEY, api_base="http://x/v1", redis_url="http://not-redis")
    with pytest.raises(ConfigError, match="--call-ttl"):
        ServerSettings(api_key=KEY, api_base="http://x/v1", call_ttl=0.1)
    monkeypatch.setenv("BRIDGE_CALL_TTL", "soon")
    with pytest.raises(ConfigError, match="BRIDGE_CALL_TTL"):
        from_args(parse(), KEY, "http://x/v1", offline=False)
    monkeypatch.delenv("BRIDGE_REDIS_URL")
    with pytest.raises(ConfigError, match="Redis"):
        token_admin_settings(parse("tokens", "list"))


def test_json_lines_and_redaction() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(Redact(KEY, "access-SECRET"))
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("bridge.test.logs")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("upstream said %s and %s", f"Incorrect API key provided: {KEY}", "access-SECRET")
        logger.warning("an ephemeral key ek_abcdef123456 leaked")
        try:
            raise ValueError(f"boom {KEY}")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    lines = [json.loads(x) for x in stream.getvalue().splitlines()]
    assert [x["level"] for x in lines] == ["warning", "warning", "error"]
    text = stream.getvalue()
    assert KEY not in text and KEY[-8:] not in text and "access-SECRET" not in text and "ek_abcdef" not in text
    assert "[redacted]" in lines[0]["msg"] and "ValueError" in lines[2]["error"]


@pytest.fixture
def access_lines() -> Iterator[list[logging.LogRecord]]:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    logger = logging.getLogger(ACCESS)
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)


async def test_one_line_per_request(access_lines: list[logging.LogRecord]) -> None:
    settings = ServerSettings(api_key=KEY, api_base="http://127.0.0.1:9/v1", access_token="tok-SECRET")
    client = TestClient(TestServer(make_app(settings), host="127.0.0.1"))
    await client.start_server()
    try:
        await client.get("/healthz")
        await client.post("/api/client-secret", headers={"Authorization": "Bearer wrong-SECRET"})
        await client.get("/metrics?x=tok-SECRET")
        await client.get("/missing.js")
    finally:
        await client.close()
    http = [r.http for r in access_lines]  # type: ignore[attr-defined]
    assert [(h["method"], h["path"], h["status"]) for h in http] == [
        ("GET", "/healthz", 200), ("POST", "/api/client-secret", 401), ("GET", "/metrics", 200),
        ("GET", "/missing.js", 404),
    ]  # fmt: skip
    assert http[1]["reason"] == "access_token_required" and http[0]["reason"] is None
    blob = " ".join(r.getMessage() + json.dumps(r.http) for r in access_lines)  # type: ignore[attr-defined]
    assert "SECRET" not in blob
