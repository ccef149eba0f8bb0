"""The link seam: everything a connection's runtime needs from a connection to the model.

Like httpx's transport: the runtime takes a ``RealtimeLink``; tests may pass a scripted one. A link is one
connection (one Realtime session, one WebRTC call or WebSocket); it is thrown away when it closes, and
:meth:`RealtimeLink.close_info` says why, as a typed :class:`CloseInfo` a supervisor can act on.

What differs between transports is declared in :class:`LinkTraits`, so the runtime asks "does the server
truncate by itself?" instead of comparing transport names.
"""

from __future__ import annotations

import abc
import enum
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from bridge.faults import Faults

if TYPE_CHECKING:
    from bridge.rtc.receiver import PlayoutClock

log = logging.getLogger(__name__)

Transport = Literal["webrtc", "ws"]


@dataclass(frozen=True)
class LinkTraits:
    """What a link's transport does, declared (PROTOCOL.md 2.3, 4.5)."""

    transport: Transport
    """What the session's media travels over: written on the transcript's ``session`` line."""
    server_truncates: bool
    """On a VAD barge-in the server truncates the reply at what it has *sent* and says so with
    ``conversation.item.truncated`` (WebRTC/SIP media). Otherwise (WebSocket) the client must tell it
    what was heard: ``conversation.item.truncate``."""
    audio_in_events: bool
    """Reply audio arrives as ``response.output_audio.delta`` events, faster than real time, and is over
    when ``response.done`` arrives (WebSocket). Otherwise it arrives as paced media and is over with
    ``output_audio_buffer.stopped``."""


WEBRTC = LinkTraits(transport="webrtc", server_truncates=True, audio_in_events=False)
WS = LinkTraits(transport="ws", server_truncates=False, audio_in_events=True)


class CloseReason(enum.StrEnum):
    """Why a connection ended. The fatal ones must not be retried."""

    HANGUP = "hangup"
    """We ended it (Ctrl-C, SIGTERM, ``--duration``, moving to a new session)."""
    SERVER_CLOSED = "server_closed"
    """The server closed it (close frame, data channel closed, call hung up)."""
    NETWORK = "network"
    """The transport failed (read error, ICE failed, connection reset)."""
    SILENT = "silent"
    """Nothing arrived for too long while the call was up (server gone without a FIN)."""
    SESSION_EXPIRED = "session_expired"
    """The session hit the service's maximum duration (PROTOCOL.md 6: 60 minutes)."""
    UPLINK_FAILED = "uplink_failed"
    """Our own sending of the microphone died."""
    AUTH = "auth"
    """The key was rejected (HTTP 401, ``invalid_api_key``, close 3000): fatal."""
    REJECTED = "rejected"
    """The session or request was refused as malformed (bad model or config; close 4000, HTTP 400): fatal."""
    QUOTA = "quota"
    """The account is out of quota (``insufficient_quota``): fatal."""


FATAL_REASONS = frozenset({CloseReason.AUTH, CloseReason.REJECTED, CloseReason.QUOTA})


@dataclass(frozen=True)
class CloseInfo:
    """How and why a connection ended (``code``: the WebSocket close code, when there was one)."""

    reason: CloseReason
    detail: str = ""
    code: int | None = None

    @property
    def fatal(self) -> bool:
        return self.reason in FATAL_REASONS

    def line(self) -> str:
        """One line for the console: ``server_closed (close 1011: going away)``."""
        parts = [f"close {self.code}" if self.code is not None else "", self.detail]
        extra = ": ".join(p for p in parts if p)
        return f"{self.reason.value} ({extra})" if extra else self.reason.value


@dataclass
class ConnectTimings:
    """Milliseconds spent in each connection step (logged at -v, written to the transcript)."""

    steps: dict[str, float] = field(default_factory=dict)
    _t0: float = field(default_factory=time.perf_counter)
    _last: float = field(default_factory=time.perf_counter)

    def mark(self, step: str) -> float:
        now = time.perf_counter()
        self.steps[step] = round((now - self._last) * 1000, 1)
        self._last = now
        return self.steps[step]

    @property
    def total_ms(self) -> float:
        return round((self._last - self._t0) * 1000, 1)


class RealtimeLink(abc.ABC):
    """A live Realtime session: events in both directions, audio handled by the transport."""

    traits: LinkTraits
    call_id: str | None = None

    def __init__(self) -> None:
        self._close_info: CloseInfo | None = None
        self.malformed = Faults("malformed message from the server, dropped", log, level=logging.WARNING)
        """Messages that were not a JSON object: counted, the first logged, the session goes on."""

    @property
    def transport(self) -> Transport:
        return self.traits.transport

    @abc.abstractmethod
    async def connect(self) -> ConnectTimings:
        """Open the connection; raise AuthError / ConnectError with one clear line on failure."""

    @abc.abstractmethod
    async def send(self, event: dict[str, Any]) -> None:
        """Send one client event."""

    @abc.abstractmethod
    async def recv(self) -> dict[str, Any] | None:
        """The next server event, or None once the connection has closed (then :meth:`close_info` says why)."""

    async def run_media(self) -> None:
        """The link's own media work for as long as the connection lives (sending the microphone,
        following the server's loss reports); cancelled when the connection ends. Returns at once when
        there is none."""
        return None

    def feed_playout(self, playout: PlayoutClock) -> None:
        """This connection's reply audio now plays (it is the call's current one): a link whose audio is a
        real-time stream reports each packet's arrival to ``playout``, which asks it for concealment when a
        frame is late (WebRTC: NetEq-like, :meth:`bridge.rtc.receiver.AudioReceiver.follow`). A link whose
        audio comes in events has nothing to do."""
        return None

    def close_info(self) -> CloseInfo | None:
        """Why the connection ended, once it has."""
        return self._close_info

    def closed_because(self, info: CloseInfo) -> None:
        """Record why the connection ended (the first reason wins)."""
        if self._close_info is None:
            self._close_info = info

    def stats(self) -> dict[str, Any]:
        """Counters for the transcript's ``stats`` line."""
        return {}

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Hang up and release everything; idempotent."""
