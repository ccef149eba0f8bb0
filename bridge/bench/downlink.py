"""The WebRTC downlink on a virtual clock: network profile -> AudioReceiver -> PlayoutBuffer -> device pulls.

A discrete-event simulation of the real classes (nothing is mocked but time): a server sends a 20 ms Opus
frame every 20 ms; each goes through the lab profile's bottleneck, loss and delay
(:mod:`bridge.bench.forwarder`'s pure classes, the same as on the wire); the receiver and the playout buffer
run as in ``bridge run``; a device pulls 10 ms blocks on its own clock (the lab's ``.wav`` sink). Being
independent of this shared VM's CPU, it compares receive policies exactly, run after run:

- ``steps``: the playout margin as it was: 5 ms, raised 10 ms by an underrun (at most once a second),
  relaxed after quiet time; holes waited for 20 ms or 3x the RFC 3550 jitter;
- ``neteq``: :meth:`bridge.rtc.receiver.AudioReceiver.follow`: the margin from the measured arrival jitter
  (NetEq's quantile), a frame concealed when the device needs it and its packet is not there;
- ``neteq-fec``: the same, but a lost frame counts as arriving with the next packet (whose in-band FEC
  recovers it), so under loss the margin grows until that packet is in time (``follow(fec_wait=True)``).

Per policy and profile: the latency each frame adds on the client (packet arrival -> its first sample handed
to the device) and end to end (sent -> handed), gaps (device blocks the stream left silent while audio was
flowing, per minute), concealed frames (PLC, FEC from the next packet) and late packets.
Run: ``python -m bridge.bench.downlink [--seconds 60] [--profiles wifi,lossy,...]``.
"""

from __future__ import annotations

import argparse
import heapq
import random
import sys
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from bridge.bench.forwarder import Bottleneck, CrossTraffic, Impairment, bottlenecks, cross_targets
from bridge.bench.profiles import PROFILES, Profile
from bridge.media.playout import PlayoutBuffer
from bridge.rtc.receiver import AudioReceiver, FrameInfo
from bridge.rtc.testing import FRAME, opus_packets, tone

Policy = Literal["steps", "neteq", "neteq-fec"]
POLICIES: tuple[Policy, ...] = ("steps", "neteq", "neteq-fec")
BLOCK = 480  # the lab's .wav sink pulls 10 ms
PACKET_BYTES = 160  # an Opus RTP packet on the wire, with IP/UDP/SRTP overhead
TARGET_MS = 5.0  # bridge run's WebRTC playout target


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


@dataclass
class Result:
    profile: str
    policy: str
    seconds: float
    client_ms: list[float] = field(default_factory=list)  # arrival -> first sample handed, per frame
    e2e_ms: list[float] = field(default_factory=list)  # sent -> first sample handed, per frame
    silent_blocks: int = 0  # pulls that left the device (partly) silent while the stream was flowing
    concealed: int = 0
    fec: int = 0
    late: int = 0
    lost_on_wire: int = 0
    target_ms: float | None = None

    def row(self) -> dict[str, object]:
        def pct(v: list[float], q: float) -> float | None:
            return None if not v else round(float(np.percentile(v, q)), 1)

        minutes = self.seconds / 60
        return {
            "profile": self.profile,
            "policy": self.policy,
            "client_p50_ms": pct(self.client_ms, 50),
            "client_p95_ms": pct(self.client_ms, 95),
            "e2e_p50_ms": pct(self.e2e_ms, 50),
            "e2e_p95_ms": pct(self.e2e_ms, 95),
            "gaps_per_min": round(self.silent_blocks / minutes, 1),
            "concealed_per_min": round(self.concealed / minutes, 1),
            "fec_per_min": round(self.fec / minutes, 1),
            "late_per_min": round(self.late / minutes, 1),
            "lost_on_wire_per_min": round(self.lost_on_wire / minutes, 1),
            "final_target_ms": self.target_ms,
        }


def _path(profile: Profile, rng: random.Random) -> tuple[Impairment, Bottleneck | None, list[tuple[Any, ...]]]:
    _, down = bottlenecks(profile)
    cross = [
        (link, CrossTraffic(profile.cross_kbps, profile.cross_on_ms, profile.cross_period_ms, rng.random()))
        for link in cross_targets(profile, None, down)
    ]
    return Impairment(profile, rng), down, cross


def simulate(profile: Profile, policy: Policy, seconds: float = 60.0, seed: int = 1) -> Result:
    """One stream of ``seconds`` through ``profile`` with ``policy`` (see the module docstring)."""
    rng = random.Random(seed)
    clock = Clock()
    playout = PlayoutBuffer(target_ms=TARGET_MS, clock=clock)
    res = Result(profile.name, policy, seconds)
    frame_of: dict[str, tuple[float, float]] = {}  # item -> (sent, arrived) of the frame it came from
    pending_items: list[str] = []
    infos: list[FrameInfo] = []
    counter = [0]
    sent_at: dict[int, float] = {}
    arrived_at: dict[int, float] = {}

    def on_audio(pcm: np.ndarray) -> None:
        counter[0] += 1
        item = f"f{counter[0]}"
        pending_items.append(item)
        playout.push(pcm, item)

    rx = AudioReceiver(on_audio, clock=clock, observer=infos.append)
    if policy != "steps":
        rx.follow(playout, fec_wait=policy == "neteq-fec")
    payloads = opus_packets(tone(1.0, 300.0))
    imp, link, cross = _path(profile, rng)
    events: list[tuple[float, int, str, int]] = []  # (time, order, kind, seq)
    last_due = 0.0
    n_frames = int(seconds / 0.020)
    for k in range(n_frames):
        sent = 0.100 + k * 0.020
        sent_at[k] = sent
        for lk, src in cross:
            for t in src.until(sent):
                lk.offer(t, src.size)
        leaves = sent
        if link is not None:
            left = link.offer(sent, PACKET_BYTES)
            if left is None:
                res.lost_on_wire += 1
                continue
            leaves = left
        if imp.lost():
            res.lost_on_wire += 1
            continue
        due = imp.delayed(leaves, last_due)
        last_due = max(last_due, due)
        heapq.heappush(events, (due, 1, "rtp", k))
    end = 0.100 + n_frames * 0.020 + 1.0
    pull_t = 0.0
    flowing = False
    while True:
        next_rtp = events[0][0] if events else float("inf")
        deadline = rx.deadline
        next_rx = deadline if deadline is not None else float("inf")
        t = min(next_rtp, pull_t, next_rx)
        if t > end:
            break
        clock.t = max(clock.t, t)
        if t == next_rtp:
            _, _, _, k = heapq.heappop(events)
            arrived_at[k] = clock.t
            before = len(infos)
            rx.feed_rtp(k % 65536, (k * FRAME) % (1 << 32), payloads[k % len(payloads)])
            for info in infos[before:]:
                _note(info, pending_items, frame_of, sent_at, arrived_at)
        elif t == pull_t:
            before_silent = playout.counters.silent_pulls
            queued = playout.queued_samples
            out = playout.pull(BLOCK)
            if flowing and (playout.counters.silent_pulls > before_silent or queued < BLOCK) and clock.t < end - 1.0:
                res.silent_blocks += 1
            flowing = flowing or bool(out.any())
            for item in list(frame_of):
                st = playout.stats(item)
                if st is not None and st.first_handed is not None:
                    sent, arrived = frame_of.pop(item)
                    res.client_ms.append((st.first_handed - arrived) * 1000)
                    res.e2e_ms.append((st.first_handed - sent) * 1000)
            pull_t += BLOCK / 48_000
        else:
            before = len(infos)
            rx.poll()
            for info in infos[before:]:
                _note(info, pending_items, frame_of, sent_at, arrived_at)
    rs = rx.stats
    res.concealed = rs.concealed_frames
    res.fec = rs.fec_frames
    res.late = rs.window.late_dropped + rs.window.covered_late
    res.target_ms = playout.target_ms
    return res


def _note(
    info: FrameInfo,
    pending: list[str],
    frame_of: dict[str, tuple[float, float]],
    sent_at: dict[int, float],
    arrived_at: dict[int, float],
) -> None:
    """Tie the item just pushed to the frame it came from (concealed frames are not latency samples)."""
    item = pending.pop(0)
    if info.rtp_timestamp is None or info.concealed:
        return
    k = info.rtp_timestamp // FRAME
    if k in sent_at and k in arrived_at:
        frame_of[item] = (sent_at[k], arrived_at[k])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bridge.bench.downlink", description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--profiles", default=",".join(PROFILES))
    p.add_argument("--seeds", type=int, default=3)
    args = p.parse_args(argv)
    head = ["profile", "policy", "client p50/p95 ms", "end-to-end p50/p95 ms", "gaps/min", "concealed/min"]
    head += ["of which from the next packet (FEC if coded)/min", "late/min"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for name in args.profiles.split(","):
        prof = PROFILES[name.strip()]
        for policy in POLICIES:
            rows = [simulate(prof, policy, args.seconds, seed).row() for seed in range(1, args.seeds + 1)]

            def med(key: str, rows: list[dict[str, object]] = rows) -> float:
                return float(np.median([float(r[key] or 0) for r in rows]))  # type: ignore[arg-type]

            print(
                f"| {name} | {policy} | {med('client_p50_ms'):.1f} / {med('client_p95_ms'):.1f} | "
                f"{med('e2e_p50_ms'):.1f} / {med('e2e_p95_ms'):.1f} | {med('gaps_per_min'):.1f} | "
                f"{med('concealed_per_min'):.1f} | {med('fec_per_min'):.1f} | {med('late_per_min'):.1f} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
