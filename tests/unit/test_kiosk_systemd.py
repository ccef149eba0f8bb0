"""sd_notify over a real AF_UNIX datagram socket, and the watchdog fed only while healthy."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.kiosk.systemd import Notifier, WatchdogFeeder, socket_address, watchdog_interval


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A stand-in for systemd's notification socket: a bound AF_UNIX datagram socket."""
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2.0)
    yield sock, path
    sock.close()


def received(sock: socket.socket) -> dict[str, str]:
    return received_dict(sock.recv(4096))


def test_ready_status_watchdog_stopping_arrive_as_datagrams(manager: tuple[socket.socket, str]) -> None:
    sock, path = manager
    n = Notifier({"NOTIFY_SOCKET": path})
    assert n.enabled
    assert n.ready("idle: listening")
    assert received(sock) == {"READY": "1", "STATUS": "idle: listening"}
    assert n.status("in_call\nREADY=1")  # a newline cannot forge a second assignment
    assert received(sock) == {"STATUS": "in_call READY=1"}
    assert n.watchdog()
    assert received(sock) == {"WATCHDOG": "1"}
    assert n.stopping()
    assert received(sock) == {"STOPPING": "1"}
    assert n.sent == 4 and n.faults.count == 0
    n.close()


def test_abstract_namespace_socket() -> None:
    name = f"bridge-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    sock.settimeout(2.0)
    try:
        n = Notifier({"NOTIFY_SOCKET": "@" + name})
        assert n.ready()
        assert received(sock) == {"READY": "1"}
    finally:
        sock.close()


def test_without_systemd_everything_is_a_no_op() -> None:
    n = Notifier({})
    assert not n.enabled
    assert not n.ready() and not n.watchdog() and n.sent == 0
    assert socket_address("vsock:2:1234") is None


def test_a_vanished_manager_is_counted_not_raised(tmp_path: Path) -> None:
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    assert not n.ready()
    assert not n.watchdog()
    assert n.faults.count == 2 and "FileNotFoundError" in n.faults.last


def test_watchdog_interval_is_half_of_watchdog_usec_for_this_process() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, pid=4242) is None
    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None


async def test_feeder_pings_only_while_healthy(manager: tuple[socket.socket, str]) -> None:
    sock, path = manager
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    reason: str | None = None
    decisions: asyncio.Queue[str | None] = asyncio.Queue()

    def health() -> str | None:
        decisions.put_nowait(reason)
        return reason

    feeder = WatchdogFeeder(Notifier({"NOTIFY_SOCKET": path}), 0.02, health)

    async def pings(count: int) -> None:
        for _ in range(count):
            assert received_dict(await loop.sock_recv(sock, 4096)) == {"WATCHDOG": "1"}

    async def unhealthy_decisions(count: int) -> None:
        while count:
            count -= (await decisions.get()) is not None

    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(feeder.run())
        async with asyncio.timeout(5):
            await pings(3)
            reason = "microphone silent for 12 s"
            await unhealthy_decisions(10)
        pings_before = feeder.pings
        while True:  # only pings sent before health changed may be queued
            try:
                assert received_dict(sock.recv(4096)) == {"WATCHDOG": "1"}
            except BlockingIOError:
                break
        async with asyncio.timeout(5):
            await unhealthy_decisions(5)
        assert feeder.pings == pings_before and feeder.withheld >= 15
        with pytest.raises(BlockingIOError):
            sock.recv(4096)
        reason = None
        async with asyncio.timeout(5):
            await pings(2)
        task.cancel()


def received_dict(data: bytes) -> dict[str, str]:
    return dict(line.split("=", 1) for line in data.decode().split("\n"))
