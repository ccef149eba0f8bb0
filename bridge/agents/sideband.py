"""Server-side agents for browser calls: create the call with the API key, then drive it over the sideband.

PROTOCOL.md 2.1 ("unified interface") and 2.4:

1. :func:`create_call`: the browser's SDP offer goes to ``POST {base}/realtime/calls`` as
   ``multipart/form-data`` with parts ``sdp`` (``application/sdp``) and ``session`` (``application/json``,
   the start agent's session, no wrapper), authorised with the server's API key. The answer comes back
   ``201`` with ``Location: /v1/realtime/calls/{call_id}``.
2. :func:`run_sideband`: ``GET {base}/realtime?call_id=...`` (WebSocket, ``Bearer`` API key, no model).
   It "behaves exactly like any other Realtime connection": it receives every server event of the call
   and may send client events - so the ordinary :class:`bridge.call.runtime.Runtime` with an
   :class:`~bridge.agents.controller.AgentController` runs the call's tools and handoffs on the server and
   writes the browser session's transcript, while the audio flows browser <-> OpenAI directly.

The API key never reaches the browser; it is only used here, server to server.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import aiohttp

from bridge.agents.config import AgentSet
from bridge.agents.controller import AgentController
from bridge.call.record import CallRecord, Console
from bridge.call.reply_audio import ReplyAudio
from bridge.call.runtime import Runtime
from bridge.errors import AuthError, ConnectError, ProtocolError
from bridge.link import http as rest
from bridge.link.base import ConnectTimings, LinkTraits
from bridge.link.ws import EventSocket
from bridge.media.playout import PlayoutBuffer
from bridge.transcript import TranscriptWriter

log = logging.getLogger(__name__)

AUTH_CLOSE_CODES = {3000}  # PROTOCOL.md 3: bad key -> error event, then close 3000
SHAPE_CLOSE_CODES = {4000}  # bad request shape / unknown call -> close 4000


def sideband_url(api_base: str, call_id: str) -> str:
    base = api_base.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
    return f"{base}/realtime?call_id={call_id}"


async def create_call(
    http: aiohttp.ClientSession, api_base: str, api_key: str, offer_sdp: str, session: dict[str, Any]
) -> tuple[str, str]:
    """POST the offer with the API key (multipart ``sdp`` + ``session``); returns ``(answer_sdp, call_id)``."""
    url = f"{api_base}/realtime/calls"
    form = aiohttp.FormData()
    form.add_field("sdp", offer_sdp, content_type="application/sdp")
    form.add_field("session", json.dumps(session), content_type="application/json")
    headers = {"Authorization": f"Bearer {api_key}", "Accept": "application/sdp"}
    try:
        async with http.post(url, data=form, headers=headers, timeout=rest.HTTP_TIMEOUT) as resp:
            await rest.check(resp, "call creation", expect=201)
            answer = await resp.text()
            location = resp.headers.get("Location", "")
    except aiohttp.ClientError as exc:
        raise rest.client_error(exc, url) from exc
    except TimeoutError as exc:
        raise ConnectError("call creation timed out") from exc
    call_id = location.rstrip("/").rsplit("/", 1)[-1]  # PROTOCOL.md 2.1: relative Location, last segment
    if not answer.startswith("v=0") or not call_id:
        raise ProtocolError("call creation returned no SDP answer or no call id")
    return answer, call_id


SIDEBAND = LinkTraits(transport="webrtc", server_truncates=True, audio_in_events=False)
"""Events only; the call's media is WebRTC between the browser and the API, so on barge-in the server
truncates by itself and the runtime must not send truncates (PROTOCOL.md 2.3)."""


class SidebandLink(EventSocket):
    """Events only, over ``?call_id=`` (see :data:`SIDEBAND`)."""

    traits = SIDEBAND

    def __init__(self, http: aiohttp.ClientSession, api_base: str, api_key: str, call_id: str) -> None:
        super().__init__(http, sideband_url(api_base, call_id), api_key)
        self.call_id = call_id

    async def connect(self) -> ConnectTimings:
        timings = ConnectTimings()
        await self._open(f"sideband for {self.call_id}")
        timings.mark("sideband_open")
        return timings


class _LogConsole:
    """No terminal on the server: console lines go to the log."""

    def __init__(self, call_id: str) -> None:
        self._call_id = call_id

    def line(self, who: str, text: str) -> None:
        log.info("%s %s: %s", self._call_id, who, text)

    def error(self, text: str) -> None:
        log.warning("%s error: %s", self._call_id, text)


async def run_sideband(
    http: aiohttp.ClientSession,
    api_base: str,
    api_key: str,
    call_id: str,
    agents: AgentSet,
    transcript: TranscriptWriter,
    console: Console | None = None,
    controller: AgentController | None = None,
) -> AgentController:
    """Attach the agents to call ``call_id`` and run until the call ends (or this task is cancelled).

    Sends the current agent's instructions and tools once on attach, so the call is configured even if it
    was created without them (and the runtime learns the session from ``session.updated``). Raises
    :class:`AuthError` / :class:`ProtocolError` / :class:`ConnectError` when the sideband is refused.
    """
    ctrl = controller or AgentController(agents)
    link = SidebandLink(http, api_base, api_key, call_id)
    record = CallRecord(transcript, console or _LogConsole(call_id))
    runtime = Runtime(link, ReplyAudio(PlayoutBuffer(), record), record, tools=ctrl, info={"via": "sideband"})
    try:
        await link.connect()
        await link.send({"type": "session.update", "session": agents.agent_fields(ctrl.current.name)})
        await runtime.run()
    finally:
        await link.aclose()
    if link.close_code in AUTH_CLOSE_CODES:
        raise AuthError(f"sideband for {call_id} refused (close {link.close_code})")
    if link.close_code in SHAPE_CLOSE_CODES:
        raise ProtocolError(f"sideband for {call_id} refused (close {link.close_code})")
    return ctrl
