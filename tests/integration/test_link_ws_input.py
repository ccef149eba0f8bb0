"""Junk from a WebSocket server (non-JSON text, binary frames, JSON that is not an object) is counted and
skipped; the link goes on to the next real event. A real aiohttp server on 127.0.0.1."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from bridge.link.ws import EventSocket, WebSocketLink


async def test_junk_frames_are_skipped_and_counted() -> None:
    async def realtime(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str('{"type":"session.created","session":{"id":"sess_1"}}')
        await ws.send_str("not json {")
        await ws.send_bytes(b"\x00\x01binary")
        await ws.send_str("[1, 2, 3]")
        await ws.send_str('"a string"')
        await ws.send_str('{"type":"response.created","response":{"id":"resp_1"}}')
        await ws.close(code=1000)
        return ws

    app = web.Application()
    app.router.add_get("/v1/realtime", realtime)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        await read_through_junk(f"http://127.0.0.1:{port}/v1")
    finally:
        await runner.cleanup()


async def read_through_junk(base: str) -> None:
    async with aiohttp.ClientSession() as http:
        link = WebSocketLink(http, base, "gpt-realtime", "sk-test")
        await link.connect()
        first = await link.recv()
        second = await link.recv()
        assert first is not None and first["type"] == "session.created"
        assert second is not None and second["type"] == "response.created"
        assert await link.recv() is None
        assert link.malformed.count == 4
        info = link.close_info()
        assert info is not None and info.reason.value == "server_closed" and info.code == 1000
        assert isinstance(link, EventSocket)
        await link.aclose()
