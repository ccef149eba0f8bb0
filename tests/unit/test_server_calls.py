"""Server-side call pieces without a network: the call cap, error mapping, paths, the web root and the
agents' session config."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.agents import load_agents
from bridge.errors import AuthError, ConfigError, ConnectError, ProtocolError, QuotaError
from bridge.server.calls import _upstream_failure, transcript_path
from bridge.server.settings import DEFAULT_WEB_ROOT, ServerSettings, find_web_root
from bridge.server.store import AdmitRequest, Admitted, CallRecord, Limits, MemoryStore, Refusal

ROOT = Path(__file__).resolve().parents[2]
AGENTS = ROOT / "examples" / "agents" / "korean" / "agents.toml"
KEY = "sk-unit-SECRET-0123456789abcdef"


def settings(**kw: object) -> ServerSettings:
    return ServerSettings(api_key=KEY, api_base="http://127.0.0.1:9/v1", **kw)  # type: ignore[arg-type]


async def test_memory_store_counts_pending_creations_against_the_cap() -> None:
    store = MemoryStore(Limits(100, 1.0, 100, 1.0, max_calls=2, fleet_seconds_per_day=0))

    def call(n: int) -> AdmitRequest:
        return AdmitRequest("call", f"10.0.0.{n}", None, None, reservation=f"pending:{n}")

    assert isinstance(await store.admit(call(1)), Admitted) and isinstance(await store.admit(call(2)), Admitted)
    refused = await store.admit(call(3))  # two creations in flight fill the server
    assert isinstance(refused, Refusal) and refused.code == "too_many_calls" and refused.retry_after == 60
    await store.cancel("pending:2", None)
    assert isinstance(await store.admit(call(4)), Admitted)
    await store.register(CallRecord("rtc_a", "me", "triage", 0.0), "pending:1", "tok")
    assert isinstance(await store.admit(call(5)), Refusal)  # a live call holds its slot
    assert await store.end("rtc_a", "tok") and not await store.end("rtc_a", "tok")
    assert isinstance(await store.admit(call(6)), Admitted)
    with pytest.raises(ConfigError):
        settings(max_calls=0)


@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [
        (AuthError(f"call creation rejected (401): invalid_api_key: Incorrect API key provided: {KEY}"), 502,
         "upstream_auth"),
        (ConnectError("cannot reach 127.0.0.1:9: Connection refused"), 502, "upstream_unreachable"),
        (ConnectError("call creation timed out"), 504, "upstream_timeout"),
        (ProtocolError("call creation failed (429): rate_limit_exceeded: slow down"), 503, "upstream_rate_limited"),
        (QuotaError("call creation failed (429): insufficient_quota: You exceeded your quota"), 402,
         "insufficient_quota"),
        (ProtocolError(f"call creation failed (400): invalid_value: bad voice near {KEY}"), 502, "upstream_rejected"),
        (ProtocolError("call creation failed (500): server_error: boom"), 502, "upstream_error"),
        (ProtocolError("call creation returned no SDP answer or no call id"), 502, "upstream_error"),
    ],
)  # fmt: skip
def test_upstream_failures_are_mapped_without_the_key(exc: Exception, status: int, code: str) -> None:
    resp = _upstream_failure(exc, settings())  # type: ignore[arg-type]
    assert resp.status == status
    assert resp.text is not None and f'"code": "{code}"' in resp.text
    assert KEY not in resp.text and KEY[-8:] not in resp.text


def test_transcript_path_is_stamped_and_named_after_the_call(tmp_path: Path) -> None:
    path = transcript_path(tmp_path, "rtc_abc", now=0.0)
    assert path == tmp_path / "19700101T000000Z-rtc_abc.jsonl"


def test_call_session_is_the_start_agent_over_the_server_config() -> None:
    agents = load_agents(AGENTS)
    s = settings(agents=agents, instructions="Server prompt.", voice="cedar", transcription_language="en")
    session = s.call_session_config()
    assert session["instructions"] == agents.instructions_for("triage")
    assert [t["name"] for t in session["tools"]] == [t["name"] for t in agents.tools_for("triage")]
    assert session["audio"]["input"]["turn_detection"]["type"] == "server_vad"  # the server's own setting
    assert session["model"] == s.model and session["type"] == "realtime"
    with pytest.raises(ConfigError):
        settings().call_session_config()


def test_web_root_lookup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BRIDGE_WEB_ROOT", raising=False)
    assert find_web_root() == DEFAULT_WEB_ROOT.resolve()  # a checkout / editable install
    page = tmp_path / "page"
    page.mkdir()
    (page / "index.html").write_text("<!doctype html>")
    assert find_web_root(page) == page.resolve()
    monkeypatch.setenv("BRIDGE_WEB_ROOT", str(page))
    assert find_web_root() == page.resolve()
    with pytest.raises(ConfigError, match="--web-root"):
        find_web_root(tmp_path / "nowhere")
    monkeypatch.setenv("BRIDGE_WEB_ROOT", str(tmp_path))
    with pytest.raises(ConfigError, match="BRIDGE_WEB_ROOT"):
        find_web_root()


def test_web_root_missing_in_an_installed_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A non-editable install has no web/ next to the package: one clear error naming both ways out."""
    import bridge.server.settings as mod

    monkeypatch.delenv("BRIDGE_WEB_ROOT", raising=False)
    monkeypatch.setattr(mod, "DEFAULT_WEB_ROOT", tmp_path / "site-packages" / "web")
    monkeypatch.setattr(mod.sys, "prefix", str(tmp_path / "venv"))
    with pytest.raises(ConfigError) as err:
        find_web_root()
    assert "--web-root" in str(err.value) and "BRIDGE_WEB_ROOT" in str(err.value)
    shared = tmp_path / "venv" / "share" / "bridge" / "web"
    shared.mkdir(parents=True)
    (shared / "index.html").write_text("<!doctype html>")
    assert find_web_root() == shared.resolve()
