"""Keep ICE host candidates on 127.0.0.1.

aioice (0.10 .. 0.13 at least; checked against 0.13.0) gathers host candidates in
``Connection.gather_candidates`` by calling the module-level function ``aioice.ice.get_host_addresses``,
which deliberately skips 127.0.0.1 and returns every other interface address
(ENVIRONMENT.md "aiortc"). Tests and the emulator's loopback mode must keep every packet on loopback, so
while :func:`loopback_candidates` is active that function is replaced by one that returns only
``["127.0.0.1"]`` (IPv4) and nothing for IPv6.

The patch is process-wide (aioice looks the name up in its module globals at gathering time, which
happens inside ``RTCPeerConnection.setLocalDescription``). Activations are reference counted, so nested
and concurrent users are fine; the original function is restored when the last one exits. A peer that
gathers while another user holds the patch also gets loopback-only candidates: use it only where
loopback is what every peer in the process wants (tests, ``bridge emulate --loopback``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import aioice.ice

logger = logging.getLogger(__name__)

LOOPBACK_V4 = "127.0.0.1"
PATCHED_FUNCTION = "aioice.ice.get_host_addresses"


def _loopback_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    """Drop-in for ``aioice.ice.get_host_addresses(use_ipv4, use_ipv6)``: loopback only."""
    return [LOOPBACK_V4] if use_ipv4 else []


class _Patch:
    """Reference-counted state of the one process-wide patch (aioice's module is itself global)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.depth = 0
        self.original: Callable[..., list[str]] | None = None

    def enter(self) -> None:
        with self.lock:
            if self.depth == 0:
                current = aioice.ice.get_host_addresses
                if not callable(current):  # pragma: no cover - aioice changed shape
                    raise RuntimeError(f"{PATCHED_FUNCTION} is missing: aioice changed; update loopback.py")
                self.original = current
                aioice.ice.get_host_addresses = _loopback_host_addresses
                logger.debug("ICE host candidates restricted to %s", LOOPBACK_V4)
            self.depth += 1

    def exit(self) -> None:
        with self.lock:
            self.depth -= 1
            if self.depth == 0 and self.original is not None:
                aioice.ice.get_host_addresses = self.original
                self.original = None
                logger.debug("ICE host candidates restored")


_PATCH = _Patch()


def is_active() -> bool:
    """True while at least one :func:`loopback_candidates` block is active."""
    return _PATCH.depth > 0


@contextmanager
def loopback_candidates() -> Iterator[None]:
    """Within this block every aioice connection that gathers offers only a 127.0.0.1 host candidate.

    Wrap ``setLocalDescription`` (where aiortc gathers) or a whole test / server lifetime.
    """
    _PATCH.enter()
    try:
        yield
    finally:
        _PATCH.exit()
