"""The supervisor of a call's connections: opens one, runs it, and decides what happens when it ends.

Today's policy: one connection; when it ends, the call ends with its typed reason. (The resilience work
replaces a dropped connection here: detection, backoff, a fresh key, replaying the conversation.)
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from bridge.call.connection import Connection
from bridge.link.base import CloseInfo

if TYPE_CHECKING:
    from bridge.call.call import Call

log = logging.getLogger(__name__)


class Supervisor:
    """Keeps a call connected (see module docstring)."""

    def __init__(self, call: Call) -> None:
        self.call = call
        self.last: Connection | None = None

    async def run(self) -> CloseInfo:
        conn = await self.call.open_connection()
        self.last = conn
        try:
            return await conn.run()
        finally:
            await self.call.close_connection(conn)
