"""Probes for checking the lab's network: UDP and TCP echo, and UDP bursts for the bottleneck's rate.

``python -m bridge.bench.probe serve --port P --lifetime S`` answers UDP datagrams and TCP lines on P;
``python -m bridge.bench.probe udp HOST P --count N`` / ``tcp HOST P --count N`` print one JSON line:
``{"sent", "received", "rtt_ms": [...]}``. ``rate HOST P --direction up|down --count N --size B`` sends
(up) or has the server send (down) N datagrams of B bytes back to back and times their arrival at the
far end (up: from the server's 8-byte acks): the bottleneck's rate in kbit/s of Ethernet frames, and
how long the burst took to drain (what a full queue holds). Used by the netns tests and by the lab to
record the path next to each profile's results. Only ever pointed at the lab's own namespaces.
"""

from __future__ import annotations

import argparse
import json
import select
import socket
import sys
import time

FRAME_OVERHEAD = 42  # Ethernet 14 + IPv4 20 + UDP 8 bytes around a datagram's payload
BURST_DOWN = b"D"  # "send me N datagrams of B bytes": D + N (4 bytes) + B (4 bytes)
BURST_UP = b"U"  # one datagram of an upward burst; acked with u + its number (8 bytes)


def serve(port: int, lifetime: float) -> None:
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("0.0.0.0", port))
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind(("0.0.0.0", port))
    tcp.listen(4)
    print("ready", flush=True)
    conns: list[socket.socket] = []
    end = time.monotonic() + lifetime
    while time.monotonic() < end:
        readable, _, _ = select.select([udp, tcp, *conns], [], [], 0.2)
        for s in readable:
            if s is udp:
                data, addr = udp.recvfrom(65_536)
                if data[:1] == BURST_DOWN and len(data) == 9:
                    n, size = int.from_bytes(data[1:5], "big"), int.from_bytes(data[5:9], "big")
                    for i in range(min(n, 10_000)):
                        udp.sendto(b"d" + i.to_bytes(4, "big") + b"\0" * max(0, min(size, 1400) - 5), addr)
                elif data[:1] == BURST_UP:
                    udp.sendto(b"u" + data[1:5] + b"\0\0\0", addr)
                else:
                    udp.sendto(data, addr)
            elif s is tcp:
                c, _ = tcp.accept()
                c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                conns.append(c)
            else:
                data = s.recv(2048)
                if data:
                    s.sendall(data)
                else:
                    conns.remove(s)
                    s.close()


def udp_rtts(host: str, port: int, count: int, interval: float, timeout: float) -> dict[str, object]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect((host, port))
    sent_at: dict[int, float] = {}
    rtts: list[float] = []
    order: list[int] = []
    next_send = time.monotonic()
    i = 0
    deadline = next_send + count * interval + timeout
    while time.monotonic() < deadline and (i < count or len(rtts) < len(sent_at)):
        now = time.monotonic()
        if i < count and now >= next_send:
            sent_at[i] = now
            s.send(i.to_bytes(4, "big") + b"\0" * 156)  # ~ an Opus RTP packet
            i += 1
            next_send += interval
        wait = max(0.0, min(next_send - now if i < count else timeout, deadline - now))
        readable, _, _ = select.select([s], [], [], wait)
        if readable:
            try:
                data = s.recv(2048)
            except ConnectionRefusedError:
                continue
            seq = int.from_bytes(data[:4], "big")
            if seq in sent_at:
                order.append(seq)
                rtts.append((time.monotonic() - sent_at[seq]) * 1000)
    return {"sent": i, "received": len(rtts), "rtt_ms": [round(r, 3) for r in rtts], "order": order}


def udp_rate(host: str, port: int, direction: str, count: int, size: int, timeout: float) -> dict[str, object]:
    """A burst of ``count`` datagrams of ``size`` bytes through the bottleneck; its rate at the far end."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.connect((host, port))
    size = max(9, min(size, 1400))
    t0 = time.monotonic()
    if direction == "down":
        s.send(BURST_DOWN + count.to_bytes(4, "big") + size.to_bytes(4, "big"))
        frame = size + FRAME_OVERHEAD
    else:
        for i in range(count):
            s.send(BURST_UP + i.to_bytes(4, "big") + b"\0" * (size - 5))
        frame = size + FRAME_OVERHEAD
    arrivals: list[float] = []
    deadline = t0 + timeout
    while len(arrivals) < count:
        wait = deadline - time.monotonic()
        if wait <= 0 or not select.select([s], [], [], wait)[0]:
            break
        try:
            s.recv(65_536)
        except ConnectionRefusedError:
            continue
        arrivals.append(time.monotonic())
        deadline = min(t0 + timeout, arrivals[-1] + 1.0)  # the burst is over when nothing comes for 1 s
    s.close()
    kbps = None
    if len(arrivals) >= 4 and arrivals[-1] > arrivals[1]:
        # from the second arrival on: the first two leave together out of a full token bucket
        kbps = (len(arrivals) - 2) * frame * 8 / (arrivals[-1] - arrivals[1]) / 1000
    return {
        "direction": direction,
        "sent": count,
        "received": len(arrivals),
        "kbps": None if kbps is None else round(kbps, 1),
        "drain_ms": round((arrivals[-1] - arrivals[0]) * 1000, 1) if arrivals else None,
        "first_ms": round((arrivals[0] - t0) * 1000, 1) if arrivals else None,
    }


def tcp_rtts(host: str, port: int, count: int, timeout: float) -> dict[str, object]:
    t0 = time.monotonic()
    s = socket.create_connection((host, port), timeout=timeout)
    connect_ms = (time.monotonic() - t0) * 1000
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    rtts: list[float] = []
    for i in range(count):
        msg = f"{i:08d}\n".encode()
        t0 = time.monotonic()
        s.sendall(msg)
        got = b""
        while len(got) < len(msg):
            chunk = s.recv(64)
            if not chunk:
                raise ConnectionError("echo server closed")
            got += chunk
        rtts.append((time.monotonic() - t0) * 1000)
    s.close()
    return {"sent": count, "received": len(rtts), "connect_ms": round(connect_ms, 3), "rtt_ms": rtts}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bridge.bench.probe")
    sub = p.add_subparsers(dest="cmd", required=True)
    sp = sub.add_parser("serve")
    sp.add_argument("--port", type=int, default=7007)
    sp.add_argument("--lifetime", type=float, default=30.0)
    for name in ("udp", "tcp"):
        c = sub.add_parser(name)
        c.add_argument("host")
        c.add_argument("port", type=int)
        c.add_argument("--count", type=int, default=50)
        c.add_argument("--interval", type=float, default=0.02)
        c.add_argument("--timeout", type=float, default=2.0)
    r = sub.add_parser("rate")
    r.add_argument("host")
    r.add_argument("port", type=int)
    r.add_argument("--direction", choices=("up", "down"), default="down")
    r.add_argument("--count", type=int, default=200)
    r.add_argument("--size", type=int, default=1000)
    r.add_argument("--timeout", type=float, default=10.0)
    args = p.parse_args(argv)
    if args.cmd == "serve":
        serve(args.port, args.lifetime)
        return 0
    if args.cmd == "udp":
        result = udp_rtts(args.host, args.port, args.count, args.interval, args.timeout)
    elif args.cmd == "rate":
        result = udp_rate(args.host, args.port, args.direction, args.count, args.size, args.timeout)
    else:
        result = tcp_rtts(args.host, args.port, args.count, args.timeout)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
