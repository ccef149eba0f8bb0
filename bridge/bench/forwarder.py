"""The impairment forwarder: a userspace bridge between two interfaces that delays and drops frames.

The kernel here has no ``netem`` (ENVIRONMENT.md "Network impairment"), so the lab runs this process in
a middle network namespace with one leg of each veth pair. Two ``AF_PACKET`` raw sockets read every
Ethernet frame arriving on either leg and send it out of the other after the profile's impairment, per
direction. Working at layer 2 makes it transparent to ARP, ICE, DTLS, SRTP, SCTP and TCP alike; the veths
need their offloads off (checksums and segmentation), which ``netem.py`` does.

A frame's way through (bridge.bench.profiles): the bottleneck when the profile has one
(:class:`Bottleneck`: a token bucket at the link rate behind a drop-tail queue; a full queue drops the
frame), then random loss, then the propagation delay and jitter (:class:`Impairment`). Cross traffic
(:class:`CrossTraffic`) is a second flow whose frames are offered to the same bottleneck at their own
times and then thrown away: they take capacity and queue space as a download on the same link would,
and reach no namespace. All of it is computed on arrival (a FIFO link with a known rate is
deterministic), so the main loop only sends each frame at its due time.

Frames keep their order per direction unless the profile allows reordering: a frame is never scheduled
before the one ahead of it. The pending queue is bounded (``MAX_PENDING``); overflow drops are counted.
The process exits after ``--lifetime`` seconds, on SIGTERM/SIGINT, or when its parent dies, and prints
one JSON line of counters on exit. Run: ``python -m bridge.bench.forwarder CLIENT_IF SERVER_IF --profile
JSON`` (the first interface faces the client: frames arriving on it go "up").
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
from collections import deque
from dataclasses import dataclass, field

from bridge.bench.profiles import Profile

ETH_P_ALL = 0x0003
MAX_FRAME = 65_535
MAX_PENDING = 20_000  # frames in flight across both directions (50 ms x a few Mbit/s is far below)
MTU_FRAME = 1514  # bytes of the largest Ethernet frame on these veths (1500 + header)
CROSS_FRAME = 1514  # cross traffic comes in full-size frames, as a download does


@dataclass
class Direction:
    """One way through the forwarder and its counters."""

    name: str
    out: socket.socket
    bottleneck: Bottleneck | None = None
    last_due: float = 0.0
    counts: dict[str, int] = field(
        default_factory=lambda: {"in": 0, "sent": 0, "lost": 0, "queue_dropped": 0, "overflow": 0}
    )


class Bottleneck:
    """A link of ``kbps`` behind a drop-tail FIFO queue ``queue_ms`` deep (pure; times in seconds).

    The rate is a token bucket: tokens (bytes) accrue at the rate up to ``burst`` bytes (one full frame
    by default, so the link never sends faster than its rate by more than one frame), and a frame leaves
    the head of the queue once there are tokens for all of it. The queue holds at most the bytes the
    rate sends in ``queue_ms``; a frame that does not fit is dropped (drop-tail), so no frame waits much
    longer than ``queue_ms`` (plus its own serialisation) before it leaves.
    """

    def __init__(self, kbps: float, queue_ms: float, *, burst: int = MTU_FRAME) -> None:
        if kbps <= 0 or queue_ms <= 0:
            raise ValueError("a bottleneck needs a positive rate and queue depth")
        self.rate = kbps * 1000 / 8  # bytes per second
        self.limit = max(MTU_FRAME, int(self.rate * queue_ms / 1000))  # queue size in bytes
        self.burst = burst
        self._tokens = float(burst)
        self._tokens_at = 0.0  # when _tokens was true
        self._free_at = 0.0  # when the frame ahead has left
        self._waiting: deque[tuple[float, int]] = deque()  # (departure, size) of frames not yet gone
        self._queued = 0  # bytes of those
        self.counts = {"frames": 0, "bytes": 0, "dropped": 0, "dropped_bytes": 0}
        self.max_wait = 0.0

    def queued_bytes(self, now: float) -> int:
        self._leave(now)
        return self._queued

    def offer(self, now: float, size: int) -> float | None:
        """A frame of ``size`` bytes arrives at ``now``: when it leaves the link, or None if the queue is full."""
        self._leave(now)
        if self._queued + size > self.limit:
            self.counts["dropped"] += 1
            self.counts["dropped_bytes"] += size
            return None
        start = max(now, self._free_at)
        tokens = min(self.burst, self._tokens + (start - self._tokens_at) * self.rate)
        depart = start if tokens >= size else start + (size - tokens) / self.rate
        self._tokens = max(0.0, tokens - size) if depart == start else 0.0
        self._tokens_at = depart
        self._free_at = depart
        self._waiting.append((depart, size))
        self._queued += size
        self.counts["frames"] += 1
        self.counts["bytes"] += size
        self.max_wait = max(self.max_wait, depart - now)
        return depart

    def _leave(self, now: float) -> None:
        while self._waiting and self._waiting[0][0] <= now:
            self._queued -= self._waiting.popleft()[1]


class CrossTraffic:
    """On/off cross traffic: full-size frames at ``kbps`` for ``on_ms`` of every ``period_ms`` (pure).

    :meth:`until` returns the send times of the frames due up to ``now``, in order; the first period
    starts at ``start``.
    """

    def __init__(self, kbps: float, on_ms: float, period_ms: float, start: float, size: int = CROSS_FRAME) -> None:
        if kbps <= 0 or not 0 < on_ms <= period_ms:
            raise ValueError("cross traffic needs a rate and 0 < on_ms <= period_ms")
        self.size = size
        self.interval = size * 8 / (kbps * 1000)
        self.on = on_ms / 1000
        self.period = period_ms / 1000
        self._period_start = start
        self._next = start

    def until(self, now: float) -> list[float]:
        out = []
        while self._next <= now:
            out.append(self._next)
            self._next += self.interval
            if self._next >= self._period_start + self.on:
                self._period_start += self.period
                self._next = self._period_start
        return out


class Impairment:
    """Pure scheduling of loss, delay and jitter: given when a frame leaves the bottleneck (or arrives, with
    none), when to send it on (or None to drop it)."""

    def __init__(self, profile: Profile, rng: random.Random) -> None:
        self.profile = profile
        self.rng = rng

    def lost(self) -> bool:
        return self.profile.loss > 0 and self.rng.random() < self.profile.loss

    def delayed(self, now: float, last_due: float) -> float:
        p = self.profile
        delay = p.delay_ms
        if p.jitter_ms > 0:
            delay += self.rng.uniform(-p.jitter_ms, p.jitter_ms)
        due = now + max(0.0, delay) / 1000
        return due if p.reorder else max(due, last_due)

    def due(self, now: float, last_due: float) -> float | None:
        return None if self.lost() else self.delayed(now, last_due)


def _open(ifname: str) -> socket.socket:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.bind((ifname, 0))
    s.setblocking(False)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    return s


def bottlenecks(profile: Profile) -> tuple[Bottleneck | None, Bottleneck | None]:
    """The profile's (up, down) bottlenecks; one object for both when the channel is shared."""
    if profile.shared:
        assert profile.up_kbps is not None
        link = Bottleneck(profile.up_kbps, profile.queue_ms)
        return link, link
    up = Bottleneck(profile.up_kbps, profile.queue_ms) if profile.up_kbps else None
    down = Bottleneck(profile.down_kbps, profile.queue_ms) if profile.down_kbps else None
    return up, down


def cross_targets(profile: Profile, up: Bottleneck | None, down: Bottleneck | None) -> list[Bottleneck]:
    """The bottlenecks the profile's cross traffic is offered to (each once)."""
    if not profile.cross_kbps:
        return []
    wanted = {"up": [up], "down": [down], "both": [up, down]}[profile.cross_dir]
    out: list[Bottleneck] = []
    for link in wanted:
        if link is not None and all(link is not o for o in out):
            out.append(link)
    return out


def run(a: str, b: str, profile: Profile, lifetime: float, seed: int | None) -> dict[str, dict[str, int]]:
    """Forward frames between interfaces ``a`` (client side) and ``b`` (server side) until the lifetime ends
    or a signal arrives."""
    stop = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    rng = random.Random(seed)
    up_link, down_link = bottlenecks(profile)
    sa, sb = _open(a), _open(b)
    up, down = Direction(f"{a}->{b}", sb, up_link), Direction(f"{b}->{a}", sa, down_link)
    dirs = {sa.fileno(): up, sb.fileno(): down}
    socks = {sa.fileno(): sa, sb.fileno(): sb}
    imp = Impairment(profile, rng)
    t0 = time.monotonic()
    cross = [
        (link, CrossTraffic(profile.cross_kbps, profile.cross_on_ms, profile.cross_period_ms, t0 + rng.random()))
        for link in cross_targets(profile, up_link, down_link)
    ]
    cross_counts = {"frames": 0, "dropped": 0}
    pending: list[tuple[float, int, Direction, bytes]] = []
    seq = 0
    parent = os.getppid()
    end = t0 + lifetime
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
                    arrived = time.monotonic()
                    d.counts["in"] += 1
                    for link, source in cross:  # the second flow's frames up to now go first
                        for t in source.until(arrived):
                            cross_counts["frames"] += 1
                            if link.offer(t, source.size) is None:
                                cross_counts["dropped"] += 1
                    leaves = arrived
                    if d.bottleneck is not None:
                        left = d.bottleneck.offer(arrived, len(frame))
                        if left is None:
                            d.counts["queue_dropped"] += 1
                            continue
                        leaves = left
                    if imp.lost():
                        d.counts["lost"] += 1
                        continue
                    if len(pending) >= MAX_PENDING:
                        d.counts["overflow"] += 1
                        continue
                    due = imp.delayed(leaves, d.last_due)
                    d.last_due = max(d.last_due, due)
                    seq += 1
                    heapq.heappush(pending, (due, seq, d, frame))
    finally:
        sa.close()
        sb.close()
    out: dict[str, dict[str, int]] = {}
    for d in (up, down):
        out[d.name] = dict(d.counts)
        if d.bottleneck is not None:
            out[d.name]["queue_max_wait_ms"] = round(d.bottleneck.max_wait * 1000)
    if cross:
        out[up.name]["cross_frames"] = cross_counts["frames"]
        out[up.name]["cross_dropped"] = cross_counts["dropped"]
    return out


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
