"""The impairment forwarder: a userspace bridge between two interfaces that delays and drops frames.

The kernel here has no ``netem`` (ENVIRONMENT.md "Network impairment"), so the lab runs this process in
a middle network namespace with one leg of each veth pair. Two ``AF_PACKET`` raw sockets read every
Ethernet frame arriving on either leg and send it out of the other after the profile's delay, jitter
and random loss, per direction. Working at layer 2 makes it transparent to ARP, ICE, DTLS, SRTP, SCTP
and TCP alike; the veths need their offloads off (checksums and segmentation), which ``netem.py`` does.

Frames keep their order per direction unless the profile allows reordering: a frame is never scheduled
before the one ahead of it. The pending queue is bounded (``MAX_PENDING``); overflow drops are counted.
The process exits after ``--lifetime`` seconds, on SIGTERM/SIGINT, or when its parent dies, and prints
one JSON line of counters on exit. Run: ``python -m bridge.bench.forwarder A B --profile JSON``.
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import random
import select
import signal
import socket
import sys
import time
from dataclasses import dataclass, field

from bridge.bench.profiles import Profile

ETH_P_ALL = 0x0003
MAX_FRAME = 65_535
MAX_PENDING = 20_000  # frames in flight across both directions (50 ms x a few Mbit/s is far below)


@dataclass
class Direction:
    """One way through the forwarder and its counters."""

    name: str
    out: socket.socket
    last_due: float = 0.0
    counts: dict[str, int] = field(default_factory=lambda: {"in": 0, "sent": 0, "lost": 0, "overflow": 0})


class Impairment:
    """Pure scheduling: given the arrival time of a frame, when to send it (or None to drop it)."""

    def __init__(self, profile: Profile, rng: random.Random) -> None:
        self.profile = profile
        self.rng = rng

    def due(self, now: float, last_due: float) -> float | None:
        p = self.profile
        if p.loss > 0 and self.rng.random() < p.loss:
            return None
        delay = p.delay_ms
        if p.jitter_ms > 0:
            delay += self.rng.uniform(-p.jitter_ms, p.jitter_ms)
        due = now + max(0.0, delay) / 1000
        return due if p.reorder else max(due, last_due)


def _open(ifname: str) -> socket.socket:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.bind((ifname, 0))
    s.setblocking(False)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    return s


def run(a: str, b: str, profile: Profile, lifetime: float, seed: int | None) -> dict[str, dict[str, int]]:
    """Forward frames between interfaces ``a`` and ``b`` until the lifetime ends or a signal arrives."""
    stop = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    sa, sb = _open(a), _open(b)
    dirs = {sa.fileno(): Direction(f"{a}->{b}", sb), sb.fileno(): Direction(f"{b}->{a}", sa)}
    socks = {sa.fileno(): sa, sb.fileno(): sb}
    imp = Impairment(profile, random.Random(seed))
    pending: list[tuple[float, int, Direction, bytes]] = []
    seq = 0
    parent = os.getppid()
    end = time.monotonic() + lifetime
    next_parent_check = 0.0
    print("ready", flush=True)
    try:
        while not stop:
            now = time.monotonic()
            if now >= end:
                break
            if now >= next_parent_check:
                if os.getppid() != parent:
                    break  # the lab died without tearing us down
                next_parent_check = now + 1.0
            while pending and pending[0][0] <= now:
                _, _, d, frame = heapq.heappop(pending)
                try:
                    d.out.send(frame)
                    d.counts["sent"] += 1
                except OSError:
                    d.counts["overflow"] += 1  # the interface went away or its queue is full
            timeout = min(0.2, end - now)
            if pending:
                timeout = max(0.0, min(timeout, pending[0][0] - now))
            try:
                readable, _, _ = select.select(list(socks), [], [], timeout)
            except InterruptedError:
                continue
            for fd in readable:
                d = dirs[fd]
                while True:
                    try:
                        frame, addr = socks[fd].recvfrom(MAX_FRAME)
                    except BlockingIOError:
                        break
                    if addr[2] == socket.PACKET_OUTGOING:
                        continue  # our own transmission on this leg
                    d.counts["in"] += 1
                    due = imp.due(time.monotonic(), d.last_due)
                    if due is None:
                        d.counts["lost"] += 1
                        continue
                    if len(pending) >= MAX_PENDING:
                        d.counts["overflow"] += 1
                        continue
                    d.last_due = max(d.last_due, due)
                    seq += 1
                    heapq.heappush(pending, (due, seq, d, frame))
    finally:
        sa.close()
        sb.close()
    return {d.name: d.counts for d in dirs.values()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bridge.bench.forwarder", description=__doc__.splitlines()[0])
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--profile", required=True, help="Profile as JSON")
    p.add_argument("--lifetime", type=float, default=3600.0)
    p.add_argument("--seed", type=int, default=None)
    args = p.parse_args(argv)
    profile = Profile.from_dict(json.loads(args.profile))
    counts = run(args.a, args.b, profile, args.lifetime, args.seed)
    print(json.dumps(counts), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
