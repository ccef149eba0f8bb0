"""One connection of a call: a link, its runtime and the uplink the station feeds, thrown away together.

:class:`Connection` is made by :class:`bridge.call.connector.Connector` already connected and attached to
the station's microphone. :meth:`Connection.run` returns the typed reason the link ended with
(:class:`bridge.link.base.CloseInfo`); :meth:`Connection.aclose` detaches the microphone, hangs up and
releases the link, within a bounded time (a peer can wait ~20 s for a close frame that never comes).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from bridge.call.runtime import Runtime
from bridge.link.base import CloseInfo, CloseReason, RealtimeLink
from bridge.media.mic import MicRouter
from bridge.media.uplink import Uplink

if TYPE_CHECKING:
    from bridge.rtc.receiver import PlayoutClock

log = logging.getLogger(__name__)

CLOSE_TIMEOUT_S = 1.5  # hang-up and peer close; Ctrl-C must end the run within 2 s


class Connection:
    """A link, its :class:`Runtime` and its :class:`Uplink` (see module docstring)."""

    def __init__(self, link: RealtimeLink, runtime: Runtime, uplink: Uplink, mic: MicRouter) -> None:
        self.link = link
        self.runtime = runtime
        self.uplink = uplink
        self.replayed = 0
        """Items of the call's history this session was told when it started (a reconnect)."""
        self._mic = mic
        self._closed = False

    def go_live(self, playout: PlayoutClock) -> None:
        """This connection's reply audio plays from now on (it becomes the call's current one); a real-time
        stream's arrivals steer ``playout`` (:meth:`RealtimeLink.feed_playout`)."""
        self.runtime.reply.live = True
        self.link.feed_playout(playout)

    def attach_mic(self) -> None:
        """From the next frame on, the station's microphone goes to this connection (and no longer to
        whichever had it)."""
        self._mic.attach(self.uplink)

    async def run(self, *extra: Coroutine[Any, Any, None]) -> CloseInfo:
        """Until the link closes (or this is cancelled); ``extra`` tasks run in the runtime's TaskGroup.

        A bug that escapes the runtime ends this connection like a drop (logged with its traceback and
        counted in ``metrics.internal_errors``) instead of the whole call: a kiosk must outlive it."""
        try:
            return await self.runtime.run(*extra)
        except Exception as exc:
            log.exception("the connection's runtime failed; treated as a dropped connection")
            self.runtime.record.metrics.internal_errors += 1
            info = CloseInfo(CloseReason.NETWORK, f"internal error: {type(exc).__name__}: {exc}")
            self.link.closed_because(info)
            return info

    async def aclose(self) -> None:
        """Idempotent; never takes longer than :data:`CLOSE_TIMEOUT_S`."""
        if self._closed:
            return
        self._closed = True
        self._mic.detach(self.uplink)
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await self.link.aclose()
        except TimeoutError:
            log.warning(
                "closing the %s link took longer than %.1f s; left behind", self.link.transport, CLOSE_TIMEOUT_S
            )
