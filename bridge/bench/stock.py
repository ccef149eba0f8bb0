"""The "stock" baseline: a plain aiortc client with aiortc's default receive path.

What a developer gets by following aiortc's examples: ``RTCPeerConnection``, a data channel, a paced
file track as the microphone, and ``RemoteStreamTrack.recv()`` (aiortc's jitter buffer with
``prefetch=4`` and its decoder thread, ENVIRONMENT.md "aiortc") as the speaker. Each received frame is
written to the output at the moment ``recv()`` returned it, i.e. as if a sound card played it at once:
a best case for the baseline (no device buffer), so the difference to ``bridge run`` is a lower bound.

Writes the same ``.wav`` + transcript ``session`` line (``input_start_unix``, ``output_start_unix``) as
``bridge run``, so :mod:`bridge.bench.metrics` reads both alike.
Run: ``python -m bridge.bench.stock --api-base URL --input IN.wav --output OUT.wav --transcript T.jsonl``
with ``OPENAI_API_KEY`` set (``--loopback-ice`` when not inside the lab's namespaces).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fractions
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import numpy as np
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from av import AudioFrame

from bridge.bench.signals import RATE, read_wav, write_wav

FRAME = 960  # 20 ms at 48 kHz


class FileTrack(MediaStreamTrack):
    """A file played like a microphone: 20 ms frames on monotonic deadlines (aiortc AudioStreamTrack)."""

    kind = "audio"

    def __init__(self, pcm: np.ndarray) -> None:
        super().__init__()
        self.pcm = pcm
        self.index = 0
        self.t0: float | None = None
        self.start_unix: float | None = None
        self.started = asyncio.Event()

    async def recv(self) -> AudioFrame:
        if self.t0 is None:
            self.t0 = time.monotonic()
            self.start_unix = time.time()
            self.started.set()
        else:
            await asyncio.sleep(max(0.0, self.t0 + self.index * FRAME / RATE - time.monotonic()))
        chunk = self.pcm[self.index * FRAME : (self.index + 1) * FRAME]
        chunk = np.pad(chunk, (0, FRAME - len(chunk)))
        frame = AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.pts = self.index * FRAME
        frame.time_base = fractions.Fraction(1, RATE)
        self.index += 1
        return frame


async def _play(track: MediaStreamTrack, out: np.ndarray, out_start: float) -> None:
    """aiortc's default consumer: await recv(), write the frame where the clock says it is now."""
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return
        now = time.time()
        assert isinstance(frame, AudioFrame)
        pcm = frame.to_ndarray().reshape(-1, len(frame.layout.channels)).mean(axis=1).astype(np.int16)
        i = int((now - out_start) * RATE)
        if 0 <= i < len(out):
            out[i : i + len(pcm)] = pcm[: len(out) - i]


async def run(args: argparse.Namespace) -> int:
    pcm = read_wav(args.input)
    total_s = len(pcm) / RATE + args.tail
    out = np.zeros(int(total_s * RATE) + RATE * 10, dtype=np.int16)
    mic = FileTrack(pcm)
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    dc_open = asyncio.Event()
    dc = pc.createDataChannel("oai-events")
    dc.on("open", dc_open.set)
    pc.addTrack(mic)
    out_start = time.time()
    players: list[asyncio.Task[None]] = []

    @pc.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        if track.kind == "audio":
            players.append(asyncio.ensure_future(_play(track, out, out_start)))

    key = os.environ.get("OPENAI_API_KEY", "")
    try:
        await pc.setLocalDescription(await pc.createOffer())
        async with aiohttp.ClientSession() as http:
            headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/sdp"}
            async with http.post(f"{args.api_base}/realtime/calls", data=pc.localDescription.sdp, headers=headers) as r:
                if r.status != 201:
                    print(f"stock: calls returned HTTP {r.status}", file=sys.stderr)
                    return 1
                answer = await r.text()
            await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
            async with asyncio.timeout(15):
                await dc_open.wait()
            connected = time.time()
            async with asyncio.timeout(5):
                await mic.started.wait()
            assert mic.start_unix is not None
            line = {
                "ts": datetime.fromtimestamp(connected, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                "kind": "session",
                "transport": "webrtc-stock",
                "input_start_unix": round(mic.start_unix, 6),
                "output_start_unix": round(out_start, 6),
            }
            await asyncio.to_thread(Path(args.transcript).write_text, json.dumps(line) + "\n", "utf-8")
            await asyncio.sleep(max(0.0, mic.start_unix + total_s - time.time()))
    finally:
        for task in players:
            task.cancel()
        for task in players:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await pc.close()
        end = int((time.time() - out_start) * RATE)
        write_wav(args.output, out[: min(end, len(out))])
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bridge.bench.stock", description=__doc__.splitlines()[0])
    p.add_argument("--api-base", required=True)
    p.add_argument("--input", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--transcript", required=True)
    p.add_argument("--tail", type=float, default=1.5, help="seconds to keep listening after the input ends")
    p.add_argument("--loopback-ice", action="store_true")
    args = p.parse_args(argv)
    if args.loopback_ice:
        from bridge.rtc.loopback import loopback_candidates

        with loopback_candidates():
            return asyncio.run(run(args))
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
