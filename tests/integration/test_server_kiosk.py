"""The contract with kiosks: ``bridge run --token-url`` mints at ``bridge serve`` and posts its SDP where
the answer says (``bridge.link.http``), both direct to the API and through the relay."""

from __future__ import annotations

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from aiortc import RTCConfiguration, RTCPeerConnection

from bridge.config import Credentials
from bridge.emulator.testing import running_emulator
from bridge.errors import AuthError
from bridge.link.http import mint_key, post_sdp
from bridge.rtc.loopback import loopback_candidates
from bridge.server import ServerSettings, make_app

TOKEN = "kiosk-shared-secret"


@pytest.mark.parametrize("relay", [False, True])
async def test_kiosk_mints_and_calls_through_bridge_serve(relay: bool) -> None:
    async with running_emulator() as emu:
        settings = ServerSettings(api_key=emu.api_key, api_base=emu.base_url, access_token=TOKEN, relay_calls=relay)
        server = TestServer(make_app(settings), host="127.0.0.1")
        await server.start_server()
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        try:
            token_url = str(server.make_url("/api/client-secret"))
            async with aiohttp.ClientSession() as http:
                with pytest.raises(AuthError):
                    await mint_key(http, Credentials(None, emu.base_url, token_url, "wrong"), {})
                key = await mint_key(http, Credentials(None, emu.base_url, token_url, TOKEN), {})
                assert key.value.startswith("ek_") and key.calls_url
                assert key.calls_url.endswith("/api/calls" if relay else "/v1/realtime/calls")
                pc.createDataChannel("oai-events")
                pc.addTransceiver("audio", direction="sendrecv")
                with loopback_candidates():
                    await pc.setLocalDescription(await pc.createOffer())
                answer, call_id = await post_sdp(http, key.calls_url, key.value, pc.localDescription.sdp)
            assert answer.startswith("v=0") and call_id.startswith("rtc_")
        finally:
            await pc.close()
            await server.close()
