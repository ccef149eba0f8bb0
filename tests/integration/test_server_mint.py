"""``POST /api/client-secret`` against a real upstream: the project's emulator on 127.0.0.1."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from bridge.emulator.testing import RunningEmulator, running_emulator
from bridge.server import ServerSettings, make_app

ACCESS = "access-token-for-tests"


@pytest.fixture
async def emu() -> AsyncIterator[RunningEmulator]:
    async with running_emulator() as running:
        yield running


def _settings(emu: RunningEmulator, **kw: Any) -> ServerSettings:
    base: dict[str, Any] = {
        "api_key": emu.api_key,
        "api_base": emu.base_url,
        "voice": "cedar",
        "instructions": "Private system prompt.",
        "transcription_language": "ko",
        "key_ttl": 30,
    }
    base.update(kw)
    return ServerSettings(**base)


async def _client(settings: ServerSettings) -> TestClient:
    client = TestClient(TestServer(make_app(settings), host="127.0.0.1"))
    await client.start_server()
    return client


async def test_mint_returns_only_what_a_client_needs(emu: RunningEmulator) -> None:
    client = await _client(_settings(emu))
    try:
        resp = await client.post("/api/client-secret", json={})
        assert resp.status == 200, await resp.text()
        body = await resp.json()
    finally:
        await client.close()
    assert set(body) == {"value", "expires_at", "session", "calls_url"}
    assert body["value"].startswith("ek_")
    assert abs(body["expires_at"] - (time.time() + 30)) < 5
    assert body["calls_url"] == f"{emu.base_url}/realtime/calls"
    session = body["session"]
    assert session["voice"] == "cedar" and session["transcription"]["language"] == "ko"
    assert "Private system prompt." not in str(body)
    # The upstream really minted it with the server-side config.
    secret = emu.state.keys.secret(body["value"])
    assert secret is not None
    assert secret.session["instructions"] == "Private system prompt."
    assert secret.session["audio"]["output"]["voice"] == "cedar"
    assert secret.session["audio"]["input"]["transcription"]["language"] == "ko"
    assert resp.headers["Cache-Control"] == "no-store"


async def test_access_token_and_origin(emu: RunningEmulator) -> None:
    settings = _settings(emu, access_token=ACCESS, allowed_origins=("https://kiosk.example",))
    client = await _client(settings)
    auth = {"Authorization": f"Bearer {ACCESS}"}
    try:
        assert (await client.post("/api/client-secret")).status == 401
        assert (await client.post("/api/client-secret", headers={"Authorization": "Bearer nope"})).status == 401
        assert (await client.post("/api/client-secret", headers=auth)).status == 200  # no Origin: a kiosk
        same = f"http://127.0.0.1:{client.port}"
        assert (await client.post("/api/client-secret", headers={**auth, "Origin": same})).status == 200
        listed = {**auth, "Origin": "https://kiosk.example"}
        assert (await client.post("/api/client-secret", headers=listed)).status == 200
        for origin in ("https://evil.example", "null", f"http://127.0.0.1:{client.port + 1}"):
            resp = await client.post("/api/client-secret", headers={**auth, "Origin": origin})
            assert resp.status == 403, origin
    finally:
        await client.close()


async def test_rate_limit_per_client(emu: RunningEmulator) -> None:
    client = await _client(_settings(emu, rate_burst=2, rate_period=30.0))
    try:
        statuses = [(await client.post("/api/client-secret")).status for _ in range(2)]
        assert statuses == [200, 200]
        resp = await client.post("/api/client-secret")
        assert resp.status == 429
        assert 1 <= int(resp.headers["Retry-After"]) <= 30
        assert (await resp.json())["error"]["code"] == "rate_limited"
    finally:
        await client.close()
    minted = len(emu.state.keys._secrets)
    assert minted == 2  # the refused request never reached the upstream


async def test_upstream_down_is_a_clear_502() -> None:
    settings = ServerSettings(api_key="sk-unreachable-0000", api_base="http://127.0.0.1:9/v1")
    client = await _client(settings)
    try:
        resp = await client.post("/api/client-secret")
        assert resp.status == 502
        assert (await resp.json())["error"] == {
            "code": "upstream_unreachable",
            "message": "The server cannot reach the Realtime API.",
        }
    finally:
        await client.close()


async def test_api_key_never_leaks(caplog: pytest.LogCaptureFixture) -> None:
    """Every body, header and log line, across success and every failure path, is free of the key."""
    caplog.set_level(logging.DEBUG)
    good = "sk-leakcheck-GOOD-7d3e9f1a2b4c6d8e"
    bad = "sk-leakcheck-BAD-0a9b8c7d6e5f4a3b"
    seen: list[str] = []
    async with running_emulator(api_keys=frozenset({good})) as emu:
        for key in (good, bad):
            client = await _client(_settings(emu, api_key=key, access_token=ACCESS, rate_burst=3))
            auth = {"Authorization": f"Bearer {ACCESS}"}
            try:
                requests = [
                    ("GET", "/", {}),
                    ("GET", "/js/ui.js", {}),
                    ("GET", "/api/config", {}),
                    ("GET", "/missing.js", {}),
                    ("GET", "/api/client-secret", {}),
                    ("POST", "/api/client-secret", {}),
                    ("POST", "/api/client-secret", {**auth, "Origin": "https://evil.example"}),
                ] + [("POST", "/api/client-secret", auth)] * 4
                for method, path, headers in requests:
                    resp = await client.request(method, path, headers=headers)
                    seen.append(f"{resp.status} {dict(resp.headers)} {await resp.text()}")
            finally:
                await client.close()
        assert any(s.startswith("200 ") and '"value": "ek_' in s for s in seen)
        assert any(s.startswith("502 ") and "upstream_auth" in s for s in seen)
    blob = "\n".join(seen) + "\n" + "\n".join(r.getMessage() for r in caplog.records) + caplog.text
    for key in (good, bad):
        assert key not in blob
        assert key[-8:] not in blob  # not even the tail an upstream "Incorrect API key" message quotes


async def test_calls_relay_forwards_a_real_offer(emu: RunningEmulator) -> None:
    """Mint, then send an aiortc offer through ``/api/calls``: the emulator answers 201 with SDP."""
    from aiortc import RTCConfiguration, RTCPeerConnection

    from bridge.rtc.loopback import loopback_candidates

    client = await _client(_settings(emu, relay_calls=True))
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        minted = await (await client.post("/api/client-secret")).json()
        assert minted["calls_url"] == f"http://127.0.0.1:{client.port}/api/calls"
        pc.createDataChannel("oai-events")
        pc.addTransceiver("audio", direction="sendrecv")
        with loopback_candidates():
            await pc.setLocalDescription(await pc.createOffer())
        offer = pc.localDescription.sdp
        sdp = {"Content-Type": "application/sdp"}
        resp = await client.post("/api/calls", data=offer, headers={**sdp, "Authorization": f"Bearer {emu.api_key}"})
        assert resp.status == 401  # the relay forwards ephemeral keys only, never an API key
        resp = await client.post("/api/calls", data=offer, headers={**sdp, "Authorization": "Bearer ek_bogus1234"})
        assert resp.status == 401 and "ek_bogus1234" not in await resp.text()
        auth = {"Authorization": f"Bearer {minted['value']}"}
        resp = await client.post("/api/calls", data=offer, headers={**sdp, **auth})
        assert resp.status == 201, await resp.text()
        assert resp.content_type == "application/sdp" and "m=application" in await resp.text()
        assert resp.headers["Location"].startswith("/v1/realtime/calls/rtc_")
        assert (await client.post("/api/calls", data=b"x" * 70_000, headers={**sdp, **auth})).status == 413
        assert (await client.post("/api/calls", data=offer, headers=auth)).status == 415
    finally:
        await pc.close()
        await client.close()


async def test_upstream_rejecting_the_config_says_why(emu: RunningEmulator) -> None:
    client = await _client(_settings(emu, voice="no-such-voice"))
    try:
        resp = await client.post("/api/client-secret")
        body = await resp.json()
    finally:
        await client.close()
    assert resp.status == 502
    assert body["error"]["code"] == "upstream_rejected"
    assert "no-such-voice" in body["error"]["message"]


async def test_emulator_lets_a_page_post_its_offer_directly(emu: RunningEmulator) -> None:
    """The page's direct flow (BRIDGE_CALLS=direct): a cross-origin POST of the SDP with an ephemeral key,
    as the real API allows (PROTOCOL.md 2.1). The preflight must pass and ``Location`` must be readable."""
    from aiohttp import ClientSession

    origin = "http://127.0.0.1:8080"
    async with ClientSession() as http:
        pre = {"Origin": origin, "Access-Control-Request-Method": "POST",
               "Access-Control-Request-Headers": "authorization,content-type"}  # fmt: skip
        async with http.options(f"{emu.base_url}/realtime/calls", headers=pre) as resp:
            assert resp.status in (200, 204)
            assert resp.headers["Access-Control-Allow-Origin"] == origin
            assert "POST" in resp.headers["Access-Control-Allow-Methods"]
            allowed = {h.strip().lower() for h in resp.headers["Access-Control-Allow-Headers"].split(",")}
            assert {"authorization", "content-type"} <= allowed
        headers = {"Origin": origin, "Authorization": "Bearer ek_nope", "Content-Type": "application/sdp"}
        async with http.post(f"{emu.base_url}/realtime/calls", data="v=0\r\n", headers=headers) as resp:
            assert resp.status == 401  # errors carry CORS too, so the page can read the message
            assert resp.headers["Access-Control-Allow-Origin"] == origin
        async with http.options(f"{emu.base_url}/realtime/client_secrets", headers=pre) as resp:
            assert "Access-Control-Allow-Origin" not in resp.headers  # minting stays server-side only
