"""systemd service notification: ``READY=1``, ``STATUS=...``, ``WATCHDOG=1``, ``STOPPING=1``.

The protocol (sd_notify(3), "Notes"): send one datagram of newline-separated ``KEY=VALUE`` assignments to
the ``AF_UNIX`` ``SOCK_DGRAM`` socket named by ``$NOTIFY_SOCKET``; a name starting with ``@`` is in the
abstract namespace (the ``@`` becomes a NUL byte). With ``WatchdogSec=`` the manager sets
``$WATCHDOG_USEC`` (and ``$WATCHDOG_PID``: the watchdog is for that process only) and restarts the service
when no ``WATCHDOG=1`` arrives within that time; sd_watchdog_enabled(3) recommends pinging at half of it.

Written here rather than taken from a package: the protocol is a dozen lines and stable since systemd 209,
and the candidates cost more than they save. ``systemd-python`` (LGPL-2.1) builds a C extension against
``libsystemd-dev`` (a compiler and headers on every kiosk); ``cysystemd`` likewise links libsystemd;
``sdnotify`` (MIT, pure Python, an sdist last released in 2017) connects once when constructed, hides every
error behind a bare ``except:`` and does not read ``$WATCHDOG_USEC``; ``async-sdnotify`` is a 2025 0.1
release. None gives the one thing we need beyond the datagram: a watchdog fed **only while healthy**
(:class:`WatchdogFeeder`). Tested against a real ``AF_UNIX`` datagram socket
(tests/unit/test_kiosk_systemd.py); the example unit is checked with ``systemd-analyze verify``.

Nothing here raises into the kiosk: without ``$NOTIFY_SOCKET`` (not under systemd) every call is a no-op,
and a send that fails is counted and logged once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable, Mapping

from bridge.faults import Faults

log = logging.getLogger(__name__)


def socket_address(value: str | None) -> str | bytes | None:
    """``$NOTIFY_SOCKET`` as an address for :meth:`socket.socket.sendto` (None: not under systemd)."""
    if not value:
        return None
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None  # vsock addresses (vsock:CID:PORT) are for VMs; a kiosk never gets one


class Notifier:
    """Sends notifications to the service manager. Construct with ``os.environ`` (the default) under
    systemd; with no ``NOTIFY_SOCKET`` it is disabled and every method returns False."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.address = socket_address(env.get("NOTIFY_SOCKET"))
        self.faults = Faults("sd_notify", log)
        self.sent = 0
        self._sock: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, **fields: str | int) -> bool:
        """One datagram with ``KEY=value`` lines (e.g. ``send(READY=1, STATUS="idle")``)."""
        if self.address is None:
            return False
        lines = []
        for key, value in fields.items():
            text = str(value)
            if "\n" in text:  # one assignment per line: a newline would forge another
                text = text.replace("\n", " ")
            lines.append(f"{key}={text}")
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto("\n".join(lines).encode(), self.address)
        except OSError as exc:  # manager gone, socket full: never the kiosk's problem
            self.faults.record(exc)
            return False
        self.sent += 1
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.send(READY=1, STATUS=status) if status else self.send(READY=1)

    def status(self, text: str) -> bool:
        return self.send(STATUS=text)

    def watchdog(self) -> bool:
        return self.send(WATCHDOG=1)

    def stopping(self, status: str | None = None) -> bool:
        return self.send(STOPPING=1, STATUS=status) if status else self.send(STOPPING=1)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def watchdog_interval(environ: Mapping[str, str] | None = None, pid: int | None = None) -> float | None:
    """Seconds between pings (half of ``$WATCHDOG_USEC``), or None when no watchdog is set for this
    process (``$WATCHDOG_PID`` names another process, or the values are unusable)."""
    env = os.environ if environ is None else environ
    usec, wpid = env.get("WATCHDOG_USEC"), env.get("WATCHDOG_PID")
    if not usec:
        return None
    try:
        if wpid and int(wpid) != (os.getpid() if pid is None else pid):
            return None
        value = int(usec)
    except ValueError:
        return None
    return value / 2e6 if value > 0 else None


Health = Callable[[], str | None]
"""Returns None while the kiosk is healthy, else one line saying why not (e.g.
:meth:`bridge.kiosk.health.KioskStatus.unhealthy`)."""


class WatchdogFeeder:
    """Pings the watchdog every ``interval_s`` **while** ``health()`` says healthy; stops pinging (so
    systemd restarts the service after ``WatchdogSec``) when it does not. Run :meth:`run` in the kiosk's
    TaskGroup; being a task on the event loop, it also stops pinging when the loop is blocked."""

    def __init__(self, notifier: Notifier, interval_s: float, health: Health) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be > 0")
        self.notifier = notifier
        self.interval_s = interval_s
        self.health = health
        self.pings = 0
        self.withheld = 0
        self._reason: str | None = None

    def tick(self) -> bool:
        """One decision: ping if healthy. Returns whether it pinged."""
        reason = self.health()
        if reason is None:
            if self._reason is not None:
                log.info("watchdog: healthy again, pinging")
                self._reason = None
            self.notifier.watchdog()
            self.pings += 1
            return True
        if reason != self._reason:
            log.warning("watchdog: not pinging (%s); systemd restarts the service if this lasts", reason)
            self._reason = reason
        self.withheld += 1
        return False

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            self.tick()
            next_at += self.interval_s
            await asyncio.sleep(max(0.0, next_at - loop.time()))
