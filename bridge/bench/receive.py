"""Receive-path benchmark: added latency of ``bridge.rtc.AudioReceiver`` vs aiortc's stock audio path.

Both paths get the SAME stream at the SAME moments, in real time on one event loop: 20 ms Opus packets
(aiortc's own encoder) sent on monotonic deadlines, through a simulated network (random loss, uniform
extra delay = jitter, which reorders packets when it exceeds 20 ms).

- ours: ``AudioReceiver.feed`` (reorder window + in-loop libopus decode + PLC), as attached in production;
- stock: aiortc 1.16's own pieces, wired as ``RTCRtpReceiver`` wires them: ``JitterBuffer(capacity=16,
  prefetch=4)`` -> ``decoder_worker`` thread -> asyncio queue -> a consumer awaiting it the way
  ``RemoteStreamTrack.recv`` does.

Metric: added delay per delivered frame = time the decoded frame reaches the consumer minus the arrival
time of that frame's own packet (concealed frames are counted, not timed). Drift: median of the first
vs the last 10 s (thirds of the run when it is shorter than 30 s).

    python -m bridge.bench.receive               # 15 s per scenario (all scenarios run concurrently)
    python -m bridge.bench.receive --long        # 60 s
"""

from __future__ import annotations

import argparse
import asyncio
import queue
import random
import statistics
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from aiortc.jitterbuffer import JitterBuffer
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtcrtpreceiver import decoder_worker
from aiortc.rtp import RtpPacket

from bridge.rtc.receiver import AudioReceiver, FrameInfo
from bridge.rtc.testing import FRAME, opus_packets, tone

F = 0.020
OPUS = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48_000, channels=2, payloadType=111)


@dataclass(frozen=True)
class Scenario:
    name: str
    loss: float = 0.0
    jitter_ms: float = 0.0


SCENARIOS = (
    Scenario("clean"),
    Scenario("2 % loss", loss=0.02),
    Scenario("2 % loss + 0-30 ms jitter", loss=0.02, jitter_ms=30.0),
)


@dataclass
class PathResult:
    """Per path: (delivery time, added delay s) of every timed frame, plus counters."""

    delays: list[tuple[float, float]] = field(default_factory=list)
    frames: int = 0
    concealed: int = 0
    late: int = 0  # packets dropped because they came after their slot was concealed


@dataclass
class Network:
    """Send/arrival schedule of one scenario (decided up front so both paths see the same network)."""

    send: list[float]
    arrival: list[float | None]  # None: lost


def schedule(sc: Scenario, n: int, t0: float, rnd: random.Random) -> Network:
    send = [t0 + i * F for i in range(n)]
    arrival: list[float | None] = []
    for s in send:
        if rnd.random() < sc.loss:
            arrival.append(None)
        else:
            arrival.append(s + rnd.uniform(0.0, sc.jitter_ms / 1000.0))
    return Network(send, arrival)


class StockPath:
    """aiortc's stock audio receive path, minus the transport."""

    def __init__(self, result: PathResult, arrival_by_ts: dict[int, float]) -> None:
        self.result = result
        self.arrival_by_ts = arrival_by_ts
        self.jb = JitterBuffer(capacity=16, prefetch=4)
        self.in_q: queue.Queue[tuple[RTCRtpCodecParameters, object] | None] = queue.Queue()
        self.out_q: asyncio.Queue[object] = asyncio.Queue()
        self.err = threading.Event()
        self.thread = threading.Thread(
            target=decoder_worker, args=(asyncio.get_running_loop(), self.in_q, self.out_q, self.err), daemon=True
        )
        self.thread.start()

    def feed(self, seq: int, ts: int, payload: bytes) -> None:
        pkt = RtpPacket(payload_type=111, sequence_number=seq, timestamp=ts, payload=payload)
        pkt._data = payload  # type: ignore[attr-defined]  # what depayload() sets for Opus
        _, frame = self.jb.add(pkt)
        if frame is not None:
            self.in_q.put((OPUS, frame))

    async def consume(self) -> None:
        while True:
            frame = await self.out_q.get()
            if frame is None:
                return
            now = time.monotonic()
            self.result.frames += 1
            arrived = self.arrival_by_ts.get(frame.pts)  # type: ignore[attr-defined]
            if arrived is not None:
                self.result.delays.append((now, now - arrived))

    def stop(self) -> None:
        self.in_q.put(None)


async def run_scenario(sc: Scenario, payloads: Sequence[bytes], seed: int) -> tuple[PathResult, PathResult]:
    loop = asyncio.get_running_loop()
    n = len(payloads)
    t0 = time.monotonic() + 0.2
    net = schedule(sc, n, t0, random.Random(seed))
    arrival_by_ts: dict[int, float] = {}
    ours, stock = PathResult(), PathResult()

    def on_frame(info: FrameInfo) -> None:
        ours.frames += 1
        if info.concealed:
            ours.concealed += 1
        elif info.rtp_timestamp is not None and info.rtp_timestamp in arrival_by_ts:
            ours.delays.append((info.delivered_at, info.delivered_at - arrival_by_ts[info.rtp_timestamp]))

    rx = AudioReceiver(lambda _: None, observer=on_frame)
    sp = StockPath(stock, arrival_by_ts)
    consumer = loop.create_task(sp.consume())

    def deliver(i: int) -> None:
        seq, ts = (1000 + i) % 65536, i * FRAME
        arrival_by_ts[ts] = time.monotonic()
        rx.feed_rtp(seq, ts, payloads[i])
        sp.feed(seq, ts, payloads[i])

    # Schedule on the loop clock (monotonic); deliveries in arrival order, reordering included.
    offset = loop.time() - time.monotonic()
    for i, at in enumerate(net.arrival):
        if at is not None:
            loop.call_at(at + offset, deliver, i)
    last = max(a for a in net.arrival if a is not None)
    await asyncio.sleep(max(0.0, last - time.monotonic()) + 0.5)
    ours.late = rx.stats.late_dropped
    rx.close()
    sp.stop()
    await asyncio.wait_for(consumer, 5)
    stock.concealed = 0  # aiortc conceals nothing (gaps are jumps in pts)
    return ours, stock


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return float(np.percentile(np.asarray(values), q))


def summarize(res: PathResult, seconds: float) -> dict[str, float]:
    d = [x * 1000.0 for _, x in res.delays]
    window = 10.0 if seconds >= 30 else seconds / 3
    t_first = res.delays[0][0] if res.delays else 0.0
    t_last = res.delays[-1][0] if res.delays else 0.0
    first = [x * 1000.0 for t, x in res.delays if t - t_first <= window]
    last = [x * 1000.0 for t, x in res.delays if t_last - t <= window]
    return {
        "frames": res.frames,
        "concealed": res.concealed,
        "late": res.late,
        "p50": _pct(d, 50),
        "p95": _pct(d, 95),
        "max": max(d) if d else float("nan"),
        "first": statistics.median(first) if first else float("nan"),
        "last": statistics.median(last) if last else float("nan"),
    }


def table(rows: list[tuple[str, str, dict[str, float]]], seconds: float) -> str:
    window = "10 s" if seconds >= 30 else f"{seconds / 3:.0f} s"
    head = (
        f"| scenario ({seconds:.0f} s) | path | frames out | concealed | late | p50 ms | p95 ms | max ms "
        f"| median first {window} | median last {window} |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    body = "".join(
        f"| {sc} | {path} | {s['frames']:.0f} | {s['concealed']:.0f} | {s['late']:.0f} "
        f"| {s['p50']:.1f} | {s['p95']:.1f} | {s['max']:.1f} | {s['first']:.1f} | {s['last']:.1f} |\n"
        for sc, path, s in rows
    )
    return head + body


async def run(seconds: float, seed: int, scenarios: Sequence[Scenario] = SCENARIOS) -> str:
    n = int(seconds / F)
    base = opus_packets(tone(5.0, 440.0) + tone(5.0, 660.0, level=0.2))  # 10 s of varied audio, looped
    payloads = [base[i % len(base)] for i in range(n)]
    results = await asyncio.gather(*(run_scenario(sc, payloads, seed + k) for k, sc in enumerate(scenarios)))
    rows: list[tuple[str, str, dict[str, float]]] = []
    for sc, (ours, stock) in zip(scenarios, results, strict=True):
        rows.append((sc.name, "bridge.rtc.AudioReceiver", summarize(ours, seconds)))
        rows.append((sc.name, "aiortc stock (JitterBuffer 16/4 + decoder thread)", summarize(stock, seconds)))
    return table(rows, seconds)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--seconds", type=float, default=15.0, help="stream length per scenario (default 15)")
    ap.add_argument("--long", action="store_true", help="60 s per scenario (the docs/benchmarks.md run)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    seconds = 60.0 if args.long else args.seconds
    print(asyncio.run(run(seconds, args.seed)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
