"""Fault injection (docs/emulator.md "Faults"): every fault through RunningEmulator or the admin HTTP API,
checked from a real client's side on 127.0.0.1 (aiohttp WS, aiortc WebRTC), never by peeking alone."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from emulator_client import Client, connected_client

from bridge.emulator.testing import RunningEmulator, running_emulator

MODEL = "?model=gpt-realtime"


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def next_event(ws: aiohttp.ClientWebSocketResponse, etype: str, timeout: float = 5.0) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            msg = await ws.receive()
            assert msg.type == aiohttp.WSMsgType.TEXT, f"expected {etype}, got {msg.type} {msg.data!r}"
            event = json.loads(msg.data)
            if event["type"] == etype:
                return event


async def until(cond: Any, what: str, timeout: float = 5.0) -> None:
    """Poll ``cond`` until true; fail with ``what`` after ``timeout`` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        assert loop.time() < deadline, f"not in {timeout} s: {what}"
        await asyncio.sleep(0.01)


async def end_of(ws: aiohttp.ClientWebSocketResponse, timeout: float = 5.0) -> aiohttp.WSMessage:
    """The first message that is not an event (CLOSE, CLOSED, ERROR): how the connection ended."""
    async with asyncio.timeout(timeout):
        while (msg := await ws.receive()).type == aiohttp.WSMsgType.TEXT:
            pass
    return msg


async def open_ws(emu: RunningEmulator, http: aiohttp.ClientSession, query: str = MODEL, **kw: Any) -> Any:
    ws = await http.ws_connect(emu.ws_url + query, headers=auth(emu.api_key), **kw)
    await next_event(ws, "session.created")
    return ws


async def test_ws_drop_resets_the_connection_without_a_close_frame(http: aiohttp.ClientSession) -> None:
    async with running_emulator(think_ms=0) as emu:
        ws = await open_ws(emu, http)
        (session,) = emu.open_sessions()
        assert session["transport"] == "ws" and session["call_id"] is None
        assert await emu.inject("drop", session=session["id"]) == [session["id"]]
        msg = await ws.receive(timeout=5)
        assert msg.type in (aiohttp.WSMsgType.ERROR, aiohttp.WSMsgType.CLOSED), msg  # no CLOSE frame
        assert ws.close_code in (None, 1006)
        await until(lambda: not emu.open_sessions(), "the dropped session is forgotten")


@pytest.mark.parametrize("code", [1001, 1011, 3000, 4000])
async def test_ws_close_with_a_code(http: aiohttp.ClientSession, code: int) -> None:
    async with running_emulator(think_ms=0) as emu:
        ws = await open_ws(emu, http)
        await emu.inject("close", code=code)
        msg = await ws.receive(timeout=5)
        assert msg.type == aiohttp.WSMsgType.CLOSE and ws.close_code == code


async def test_error_event_then_the_session_goes_on(http: aiohttp.ClientSession) -> None:
    async with running_emulator(think_ms=0, reply_seconds=0.2, speed=20) as emu:
        ws = await open_ws(emu, http)
        await emu.inject("error", code="server_error", error_type="server_error", message="boom")
        err = (await next_event(ws, "error"))["error"]
        assert (err["type"], err["code"], err["message"]) == ("server_error", "server_error", "boom")
        await ws.send_json({"type": "response.create"})
        assert (await next_event(ws, "response.done"))["response"]["status"] == "completed"


async def test_ws_stall_goes_silent_without_closing(http: aiohttp.ClientSession) -> None:
    async with running_emulator(think_ms=0, ping_interval=0.1) as emu:
        ws = await open_ws(emu, http, autoping=False)
        msg = await ws.receive(timeout=2)
        assert msg.type == aiohttp.WSMsgType.PING and len(msg.data) == 4  # the real 4-byte payload
        await ws.ping(b"abcd")
        async with asyncio.timeout(2):  # answered while alive
            while (msg := await ws.receive()).type != aiohttp.WSMsgType.PONG:
                pass
        await emu.inject("stall")
        (engine,) = emu.state.open_engines()
        await ws.send_json({"type": "response.create"})  # ignored: a dead server reads nothing
        await ws.ping(b"dead")
        engine.inject_error("server_error", "said while stalled")  # the session speaks; nothing leaves
        assert engine.stalled_events_dropped >= 1
        with pytest.raises(TimeoutError):  # no event, no ping, no pong, no close for 10 ping intervals
            msg = await ws.receive(timeout=1.0)
            pytest.fail(f"a stalled session sent {msg.type} {msg.data!r}")
        assert not ws.closed and emu.open_sessions()[0]["stalled"] is True


async def test_session_length_cap_from_config_and_at_run_time(http: aiohttp.ClientSession) -> None:
    async with running_emulator(session_max_seconds=0.5) as emu:
        ws = await open_ws(emu, http)
        err = (await next_event(ws, "error"))["error"]
        assert err["code"] == "session_expired" and "maximum duration" in err["message"]
        assert (await ws.receive(timeout=2)).type == aiohttp.WSMsgType.CLOSE and ws.close_code == 1001
    async with running_emulator() as emu:
        ws = await open_ws(emu, http)
        await emu.inject("expire")
        assert (await next_event(ws, "error"))["error"]["message"].endswith("of 60 minutes.")
        assert (await ws.receive(timeout=2)).type == aiohttp.WSMsgType.CLOSE and ws.close_code == 1001


async def test_faults_armed_for_every_session_from_its_start(http: aiohttp.ClientSession) -> None:
    from bridge.emulator.faults import Fault

    async with running_emulator(session_faults=(Fault("close", after_s=0.3, code=4000),)) as emu:
        for _ in range(2):
            ws = await open_ws(emu, http)
            assert (await ws.receive(timeout=3)).type == aiohttp.WSMsgType.CLOSE and ws.close_code == 4000
    async with running_emulator(random_drop_mean_s=0.2, fault_seed=7) as emu:
        ws = await open_ws(emu, http)
        assert (await ws.receive(timeout=10)).type in (aiohttp.WSMsgType.ERROR, aiohttp.WSMsgType.CLOSED)


async def test_refusing_new_keys_calls_and_sessions(http: aiohttp.ClientSession) -> None:
    async with running_emulator() as emu:
        ws = await open_ws(emu, http)  # a session already open is not affected
        await emu.inject("refuse", status=429, seconds=30)
        async with http.post(f"{emu.base_url}/realtime/client_secrets", headers=auth(emu.api_key), json={}) as r:
            body = await r.json()
            assert r.status == 429 and body["error"]["code"] == "rate_limit_exceeded"
            assert body["error"]["type"] == "requests" and r.headers["retry-after"] == "1"
        async with http.post(f"{emu.base_url}/realtime/calls", headers=auth(emu.api_key), data="v=0") as r:
            assert r.status == 429
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(emu.ws_url + MODEL, headers=auth(emu.api_key))
        assert refused.value.status == 429
        await emu.inject("refuse", status=500, seconds=0.3)
        async with http.post(f"{emu.base_url}/realtime/client_secrets", headers=auth(emu.api_key), json={}) as r:
            body = await r.json()
            assert r.status == 500 and body["error"]["type"] == "server_error" and body["error"]["code"] is None
        await until(lambda: emu.state.switches.refusing() is None, "the refusal ends")
        async with http.post(f"{emu.base_url}/realtime/client_secrets", headers=auth(emu.api_key), json={}) as r:
            assert r.status == 200
        await ws.send_json({"type": "input_audio_buffer.clear"})
        assert (await next_event(ws, "input_audio_buffer.cleared"))["type"]


async def test_restart_forgets_sessions_keys_and_calls(http: aiohttp.ClientSession) -> None:
    async with running_emulator() as emu:
        async with http.post(f"{emu.base_url}/realtime/client_secrets", headers=auth(emu.api_key), json={}) as r:
            ek = (await r.json())["value"]
        ws = await http.ws_connect(emu.ws_url, headers=auth(ek))
        await next_event(ws, "session.created")
        forgotten = await emu.restart()
        assert len(forgotten) == 1 and emu.open_sessions() == []
        assert (await ws.receive(timeout=5)).type in (aiohttp.WSMsgType.ERROR, aiohttp.WSMsgType.CLOSED)
        again = await http.ws_connect(emu.ws_url, headers=auth(ek))  # the key is unknown now
        err = (await next_event(again, "error"))["error"]
        assert err["code"] == "invalid_api_key" and (await again.receive(timeout=2)).type == aiohttp.WSMsgType.CLOSE
        assert again.close_code == 3000
        fresh = await open_ws(emu, http)  # the API key still works: a new session starts
        assert len(emu.open_sessions()) == 1
        await fresh.close()


async def test_admin_api_reports_context_and_injects(http: aiohttp.ClientSession) -> None:
    async with running_emulator(think_ms=0, reply_seconds=0.2, speed=20, quote_context=True) as emu:
        ws = await open_ws(emu, http)
        for text in ("my name is Ada", "what is my name?"):
            await ws.send_json(
                {
                    "type": "conversation.item.create",
                    "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]},
                }
            )
            await ws.send_json({"type": "response.create"})
            done = await next_event(ws, "response.done")
        transcript = done["response"]["output"][0]["content"][0]["transcript"]
        assert transcript.endswith('You said before: "my name is Ada".')  # the reply knows the earlier turn
        async with http.get(f"{emu.admin_url}/sessions") as r:
            assert r.status == 200
            body = await r.json()
        (session,) = body["sessions"]
        assert set(session) >= {"id", "call_id", "transport", "created_at", "sidebands", "items", "type"}
        roles = [(i["role"], i["type"], i["text"]) for i in session["items"]]
        assert roles[0] == ("user", "message", "my name is Ada") and roles[2] == ("user", "message", "what is my name?")
        assert roles[3][0] == "assistant" and 'You said before: "my name is Ada"' in roles[3][2]
        for bad, status in (({"kind": "explode"}, 400), ({"kind": "close", "code": 1234}, 400),
                            ({"kind": "drop", "session": "sess_nope"}, 404)):  # fmt: skip
            async with http.post(f"{emu.admin_url}/faults", json=bad) as r:
                assert r.status == status and "error" in await r.json()
        async with http.post(f"{emu.admin_url}/faults", json={"kind": "close", "code": 4000}) as r:
            assert (await r.json())["applied"] == [session["id"]]
        assert (await end_of(ws)).type == aiohttp.WSMsgType.CLOSE and ws.close_code == 4000
        async with http.get(f"{emu.admin_url}/faults") as r:
            assert (await r.json())["refusing"] is None


async def test_admin_api_refuses_other_addresses() -> None:
    from aiohttp.test_utils import make_mocked_request

    from bridge.emulator import admin

    async with running_emulator() as emu:
        for remote, allowed in (("127.0.0.1", True), ("::1", True), ("10.0.0.2", False)):
            transport = _Peer(remote)
            request = make_mocked_request("GET", "/_emulator/sessions", app=emu.app, transport=transport)
            assert (await admin.get_sessions(request)).status == (200 if allowed else 403)


class _Peer:
    """The part of an asyncio transport aiohttp reads ``request.remote`` from."""

    def __init__(self, host: str) -> None:
        self.host = host

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return (self.host, 40000) if name == "peername" else default


def _seed(text_role: str, text: str) -> dict[str, Any]:
    kind = "output_text" if text_role == "assistant" else "input_text"
    return {
        "type": "conversation.item.create",
        "item": {"type": "message", "role": text_role, "content": [{"type": kind, "text": text}]},
    }


async def _reply_kinds(ws: aiohttp.ClientWebSocketResponse, response: dict[str, Any] | None) -> set[str]:
    await ws.send_json({"type": "response.create", **({"response": response} if response else {})})
    kinds = set()
    async with asyncio.timeout(5):
        while True:
            event = json.loads((await ws.receive()).data)
            kinds.add(event["type"])
            if event["type"] == "response.done":
                kinds.update(event["response"]["output_modalities"])
                return kinds


async def test_text_only_trap_and_its_recovery(http: aiohttp.ClientSession) -> None:
    async with running_emulator(think_ms=0, reply_seconds=0.2, speed=20) as emu:
        ws = await open_ws(emu, http)
        await ws.send_json(_seed("assistant", "Hello, how can I help?"))
        assert "response.output_audio.delta" in await _reply_kinds(ws, None)  # off by default
        await emu.inject("text_only")
        kinds = await _reply_kinds(ws, None)
        assert "response.output_text.delta" in kinds and "text" in kinds
        assert "response.output_audio.delta" not in kinds
        kinds = await _reply_kinds(ws, {"output_modalities": ["audio"]})  # asking for audio explicitly works
        assert "response.output_audio.delta" in kinds and "audio" in kinds
        await emu.inject("text_only", enabled=False)
        assert "response.output_audio.delta" in await _reply_kinds(ws, None)


async def test_text_only_trap_needs_seeded_assistant_text(http: aiohttp.ClientSession) -> None:
    async with running_emulator(think_ms=0, reply_seconds=0.2, speed=20, text_only_after_assistant_text=True) as emu:
        ws = await open_ws(emu, http)
        await ws.send_json(_seed("user", "hi"))
        assert "response.output_audio.delta" in await _reply_kinds(ws, None)  # user text alone: audio
        await ws.send_json(_seed("assistant", "earlier answer"))
        item_id = (await next_event(ws, "conversation.item.done"))["item"]["id"]
        assert "response.output_audio.delta" not in await _reply_kinds(ws, None)
        await ws.send_json({"type": "conversation.item.delete", "item_id": item_id})
        await next_event(ws, "conversation.item.deleted")
        assert "response.output_audio.delta" in await _reply_kinds(ws, None)  # the seeded text is gone


def _reset(ws: aiohttp.ClientWebSocketResponse) -> None:
    """Kill a client connection the way kill -9 does to its process: a TCP reset, no close frame."""
    transport = ws._response.connection.transport  # type: ignore[union-attr]  # the client's own socket
    sock = transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


async def test_a_dead_sideband_is_detached_and_another_takes_over(http: aiohttp.ClientSession) -> None:
    async with running_emulator(think_ms=0, reply_seconds=0.3) as emu:
        async with connected_client(emu, http) as client:
            call_id = client.call_path.rsplit("/", 1)[1]
            first = await http.ws_connect(f"{emu.ws_url}?call_id={call_id}", headers=auth(emu.api_key))
            await next_event(first, "session.created")
            (session,) = emu.open_sessions()
            assert (session["call_id"], session["transport"], session["sidebands"]) == (call_id, "webrtc", 1)
            _reset(first)
            await until(lambda: emu.open_sessions()[0]["sidebands"] == 0, "the dead sideband is detached")
            second = await http.ws_connect(f"{emu.ws_url}?call_id={call_id}", headers=auth(emu.api_key))
            await next_event(second, "session.created")
            await second.send_json({"type": "session.update", "session": {"type": "realtime", "instructions": "B"}})
            assert (await next_event(second, "session.updated"))["session"]["instructions"] == "B"
            assert emu.open_sessions()[0]["sidebands"] == 1
            await client.wait_event("session.updated")  # the call's data channel sees it too


async def test_webrtc_streams_silence_between_replies_and_stall_stops_rtp(http: aiohttp.ClientSession) -> None:
    async with running_emulator(think_ms=0, reply_seconds=0.3) as emu:
        async with connected_client(emu, http) as client:
            await until(lambda: len(client.heard) >= 25, "half a second of frames before any reply", 10)
            assert max(peak for _, peak in client.heard) == 0  # digital silence, one frame per 20 ms
            client.send({"type": "response.create"})
            await client.wait_event("output_audio_buffer.stopped", timeout=8)
            n = len(client.heard)
            await until(lambda: len(client.heard) >= n + 25, "silence frames keep coming after the reply")
            await emu.inject("stall")
            stalled_at = len(client.heard)
            client.send({"type": "response.create"})  # ignored: a dead server reads nothing
            (engine,) = emu.state.open_engines()
            engine.inject_error("server_error", "said while stalled")  # the session speaks; nothing leaves
            assert engine.stalled_events_dropped >= 1
            events = len(client.events)
            await client.frames(25)  # half a second by the client's own paced clock: frames would have come
            assert len(client.heard) <= stalled_at + 3  # at most what was already in flight
            assert len(client.events) == events and not client.peer_closed.is_set()


async def test_webrtc_session_expiry_error_then_channel_closes_then_peer_goes(http: aiohttp.ClientSession) -> None:
    async with running_emulator(session_max_seconds=1.0) as emu:
        client = Client()
        channel_closed = asyncio.Event()
        client.channel.on("close", channel_closed.set)
        try:
            await client.connect(emu, http)
            err = await client.wait_event("error", timeout=5)
            assert err["error"]["code"] == "session_expired"
            async with asyncio.timeout(5):
                await channel_closed.wait()
                await client.peer_closed.wait()
            await until(lambda: not emu.state.calls, "the call is forgotten")
        finally:
            await client.close()
