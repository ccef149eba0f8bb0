"""The latency budget (issue #18): where each millisecond of a round trip, a response and a barge-in goes,
per transport and profile, beside the floor of each stage.

The measured column comes from the lab's per-trial stages (:mod:`bridge.bench.metrics`: the emulator's log
says when the server's VAD had which audio and when its reply left; the recordings say when sound came
out). The floor is what the stage cannot go below on that path, from the path the lab measured before the
profile's runs and from the codec and devices:

- capture block: a VAD position (10 ms frames) waits for the end of the 20 ms frame it is in (uplink
  frames are 20 ms on both transports: Opus frames, 20 ms PCM appends): median 5 ms;
- codec: Opus looks ahead 6.5 ms at 20 ms frames in its VoIP and audio modes (RFC 6716 section 2: 2.5 ms
  of the CELT overlap plus the 4 ms resampler/SILK delay; ``OPUS_GET_LOOKAHEAD`` returns 312 samples at
  48 kHz). It shifts everything the server hears (uplink) and everything the client plays (downlink); PCM
  has no delay;
- network: half the measured round trip (UDP for WebRTC, TCP for WS), plus one packet's serialisation at
  the bottleneck's rate (a WebRTC packet ~180 bytes, a WS append ~1410 bytes); a WS uplink needs
  ~565 kbit/s for 24 kHz PCM16 as base64 JSON: on a slower uplink its floor is unbounded (it falls behind);
- server pacing: RTP leaves on the sender's 20 ms clock (a real-time stream), so the first reply frame
  waits for the next tick: median 10 ms; WS deltas leave as they are generated: 0;
- jitter margin (WebRTC downlink): what a real-time stream needs queued to play without gaps on this path,
  NetEq's target computed on the profile's own packet delays (:func:`jitter_margin`); WS replies arrive
  faster than real time and need none;
- device block: the lab's ``.wav`` sink pulls 10 ms blocks: median 5 ms.

The VAD's own 30 ms (speech must last that long before it is speech) and its 500 ms end of turn are the
same on both transports; the tables show them apart from what the transport adds.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np

from bridge.bench.forwarder import CrossTraffic, Impairment, bottlenecks, cross_targets
from bridge.bench.profiles import PROFILES, Profile
from bridge.media.playout_target import JitterTarget

CAPTURE_WAIT_MS = 5.0  # median wait of a 10 ms VAD position for its 20 ms frame to complete
OPUS_LOOKAHEAD_MS = 6.5  # 312 samples at 48 kHz (OPUS_GET_LOOKAHEAD, VoIP/audio modes, 20 ms frames)
DEVICE_BLOCK_MS = 5.0  # median wait for the .wav sink's next 10 ms pull
VAD_DECIDE_MS = 25.0  # 30 ms of loud 10 ms frames; the onset's own frame often counts: median 25
VAD_ALIGN_MS = 5.0  # the VAD's 10 ms frames: median wait past silence_duration_ms
RTP_TICK_MS = 10.0  # median wait for the next 20 ms RTP tick
WEBRTC_PACKET_BYTES = 184  # 48 kbit/s Opus + RTP/SRTP/UDP/IP/Ethernet headers
WEBRTC_DOWN_PACKET_BYTES = 300  # the emulator's aiortc encoder sends ~96 kbit/s
WS_APPEND_BYTES = 1410  # 20 ms of 24 kHz PCM16 as base64 JSON, WS frame, TCP/IP, Ethernet
WS_UPLINK_KBPS = WS_APPEND_BYTES * 8 / 20  # what a WS microphone needs
SLACK_GUARD_MS = 5.0  # bridge.media.playout.SLACK_GUARD_MS

STAGES = [
    ("vad_detect", "speech onset -> the VAD's decision (30 ms of speech)"),
    ("uplink", "audio captured -> the server's VAD has it (capture block, encode, network, server receive)"),
    ("vad_align", "end of speech + 500 ms -> the VAD's end of turn"),
    ("server", "end of turn -> first reply audio on the wire, minus the 200 ms think time (send pacing)"),
    ("downlink", "first reply audio on the wire -> sound (network, receive, jitter margin, device block)"),
    ("stop_path", "speech detected at the server -> the reply silent at the speaker"),
    ("echo_back", "the echo's round trip minus its uplink (relay, network, receive, margin, device)"),
]


def jitter_margin(profile: Profile, seconds: float = 120.0, seed: int = 1) -> float:
    """NetEq's target (ms) for a 20 ms packet stream on ``profile``'s downlink, plus the playout's guard:
    what a gap-free real-time stream must keep queued there."""
    rng = random.Random(seed)
    imp = Impairment(profile, rng)
    _, down = bottlenecks(profile)
    cross = [
        (link, CrossTraffic(profile.cross_kbps, profile.cross_on_ms, profile.cross_period_ms, rng.random()))
        for link in cross_targets(profile, None, down)
    ]
    clock = [0.0]
    target = JitterTarget(clock=lambda: clock[0])
    last = 0.0
    for k in range(int(seconds / 0.020)):
        sent = k * 0.020
        for link, src in cross:
            for t in src.until(sent):
                link.offer(t, src.size)
        leaves = sent
        if down is not None:
            left = down.offer(sent, WEBRTC_DOWN_PACKET_BYTES)
            if left is None:
                continue
            leaves = left
        if imp.lost():
            continue
        last = max(last, imp.delayed(leaves, last))
        clock[0] = last
        target.observe(sent, last)
    return round(target.ms + SLACK_GUARD_MS, 1)


def _one_way(path: dict[str, Any], transport: str) -> float | None:
    key = "tcp_rtt_p50_ms" if transport == "ws" else "udp_rtt_p50_ms"
    rtt = path.get(key)
    return None if rtt is None else rtt / 2


def _serialise(kbps: float | None, nbytes: float) -> float:
    return 0.0 if not kbps else nbytes * 8 / kbps


def floors(profile: Profile, transport: str, path: dict[str, Any], margin_ms: float | None) -> dict[str, float]:
    """Each stage's floor (ms, median) for ``transport`` on ``profile`` over the measured ``path``."""
    one_way = _one_way(path, transport)
    if one_way is None:
        one_way = profile.delay_ms
    rtc = transport != "ws"
    up_rate = profile.up_kbps
    down_rate = profile.up_kbps if profile.shared else profile.down_kbps
    codec = OPUS_LOOKAHEAD_MS if rtc else 0.0
    up_bytes = WEBRTC_PACKET_BYTES if rtc else WS_APPEND_BYTES
    if not rtc and up_rate is not None and up_rate < WS_UPLINK_KBPS:
        uplink = float("inf")  # the WS microphone stream does not fit: it falls further behind
    else:
        uplink = CAPTURE_WAIT_MS + one_way + _serialise(up_rate, up_bytes)
    down_bytes = WEBRTC_DOWN_PACKET_BYTES if rtc else WS_APPEND_BYTES * 4  # an 80 ms delta
    margin = (margin_ms or 0.0) if rtc else 0.0
    downlink = one_way + _serialise(down_rate, down_bytes) + codec + margin + DEVICE_BLOCK_MS
    return {
        "vad_detect": VAD_DECIDE_MS + codec,
        "uplink": uplink,
        "vad_align": VAD_ALIGN_MS + codec,
        "server": RTP_TICK_MS if rtc else 0.0,
        "downlink": downlink,
        "stop_path": one_way + DEVICE_BLOCK_MS,
        # the echo's onset waits for its own frame (median 10 ms, against 5 for a VAD position) and carries
        # the uplink's codec delay, which the uplink stage (position -> VAD) leaves to vad_detect
        "echo_back": downlink + codec + (2 * CAPTURE_WAIT_MS - CAPTURE_WAIT_MS),
    }


def totals(f: dict[str, float]) -> dict[str, float]:
    """The floors of the lab's headline numbers, as sums of their stages' floors."""
    return {
        "response_net_ms": f["vad_align"] + f["uplink"] + f["server"] + f["downlink"],
        "bargein_stop_ms": f["vad_detect"] + f["uplink"] + f["stop_path"],
        "round_trip_ms": f["uplink"] + f["echo_back"],
    }


def _p50(summary: dict[str, Any] | None) -> float | None:
    return None if not summary or not summary.get("n") else summary.get("p50")


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    if v == float("inf"):
        return "unbounded"
    return f"{v:.0f}"


def table(doc: dict[str, Any]) -> str:
    """One Markdown budget table per profile: each stage's measured median and floor, both transports."""
    cells = {(c["profile"], c["transport"]): c for c in doc["cells"]}
    transports = [t for t in ("webrtc", "ws") if any(k[1] == t for k in cells)]
    out: list[str] = []
    for name in doc["settings"].get("profiles", []):
        profile = PROFILES.get(name)
        if profile is None or not any((name, t) in cells for t in transports):
            continue
        path = doc.get("paths", {}).get(name, {})
        margin = jitter_margin(profile)
        fl = {t: floors(profile, t, path, margin) for t in transports}
        head = ["stage"] + [f"{t} {col}" for t in transports for col in ("p50", "floor")]
        out += [f"**{name}** ({profile.describe()})", "", "| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
        for key, label in STAGES:
            row = [label]
            for t in transports:
                st = cells.get((name, t), {}).get("stages", {})
                row += [_fmt(_p50(st.get(key))), _fmt(fl[t][key])]
            out.append("| " + " | ".join(row) + " |")
        for key, label in (
            ("response_net_ms", "= response (net)"),
            ("bargein_stop_ms", "= barge-in stop"),
            ("round_trip_ms", "= mouth-to-ear round trip"),
        ):
            row = [f"**{label}**"]
            for t in transports:
                row += [_fmt(_p50(cells.get((name, t), {}).get(key))), _fmt(totals(fl[t])[key])]
            out.append("| " + " | ".join(row) + " |")
        client = cells.get((name, "webrtc"), {}).get("client") or {}
        if client:
            out += ["", _client_line(client, margin)]
        out.append("")
    return "\n".join(out)


def _client_line(client: dict[str, Any], margin: float) -> str:
    held = client.get("held_ms_p50")
    return (
        f"WebRTC receive path: jitter margin {_fmt(client.get('target_ms'))} ms at the end of the call "
        f"(NetEq's target for this path: {margin:.0f} ms), audio queued ahead of each arriving frame "
        f"{_fmt(held)} ms (p50) / {_fmt(client.get('held_ms_p95'))} ms (p95); per minute of audio: "
        f"{client.get('concealed_per_min', 0):.1f} frames concealed ({client.get('fec_per_min', 0):.1f} from the "
        f"next packet, {client.get('covered_per_min', 0):.1f} when the device needed them), "
        f"{client.get('underruns_per_min', 0):.1f} dry pulls."
    )


def held_percentile(hist: list[int], q: float, bin_ms: float = 5.0) -> float | None:
    """A percentile (ms, bin middle) of the playout's held_ms_hist."""
    total = sum(hist)
    if not total:
        return None
    acc = 0
    for i, n in enumerate(hist):
        acc += n
        if acc >= q / 100 * total:
            return (i + 0.5) * bin_ms
    return None


def client_summary(stats: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    """The WebRTC receive path's share from the ``stats`` transcript lines of a cell's runs."""
    hist = np.zeros(0, dtype=int)
    counts = {"concealed": 0, "fec_frames": 0, "covered": 0, "underruns": 0}
    target = None
    for s in stats:
        h = np.asarray(s.get("playout", {}).get("held_ms_hist") or [], dtype=int)
        if len(h):
            hist = h if not len(hist) else hist + h
        rx = s.get("receiver") or {}
        for k in ("concealed", "fec_frames", "covered"):
            counts[k] += int(rx.get(k, 0) or 0)
        counts["underruns"] += int(s.get("playout", {}).get("underruns", 0) or 0)
        target = s.get("playout_target_ms", target)
    minutes = max(seconds, 1.0) / 60
    return {
        "held_ms_p50": held_percentile(hist.tolist(), 50),
        "held_ms_p95": held_percentile(hist.tolist(), 95),
        "target_ms": target,
        "concealed_per_min": counts["concealed"] / minutes,
        "fec_per_min": counts["fec_frames"] / minutes,
        "covered_per_min": counts["covered"] / minutes,
        "underruns_per_min": counts["underruns"] / minutes,
    }
