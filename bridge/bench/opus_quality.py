"""Uplink Opus settings: speech quality against encode CPU (why ``LibopusEncoder`` uses complexity 5).

Encode cost is the largest single item of the bridge's CPU in a call (docs/benchmarks.md, CPU), and
libopus trades it against quality through its complexity setting. This encodes and decodes test speech
(espeak-ng sentences, four voices) with :class:`bridge.rtc.opus.LibopusEncoder` at each bitrate and
complexity, and reports the wideband PESQ score (ITU-T P.862.2, the ``pesq`` package; references and
decoded audio at 16 kHz) and the encode time per 20 ms frame in a tight loop. espeak-ng is formant
synthesis, not a recording: the scores compare settings with each other, they are not absolute MOS.

    pip install pesq      # not a dependency of bridge: it builds from source on most machines
    python -m bridge.bench.opus_quality --bitrates 48000,32000 --complexities 0,1,3,5,9
    python -m bridge.bench.opus_quality --bitrates 48000 --complexities 5 --losses 0,1,5,10,20   # FEC

``--losses`` sets the packet loss the encoder codes in-band FEC for (the audio itself is not lost): the
FEC's price on a clean network, in quality and in encode time. ``--applications`` compares libopus's
application modes: ``restricted-lowdelay`` (CELT only) looks ahead 2.5 ms instead of 6.5 ms, which would
take 4 ms off everything the server hears (issue #18's latency budget), at the price shown:

    python -m bridge.bench.opus_quality --bitrates 48000 --complexities 5 --applications voip,restricted-lowdelay
"""

from __future__ import annotations

import argparse
import ctypes
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from bridge.emulator.behaviours.speech import parse_wav
from bridge.errors import BridgeError
from bridge.rtc.opus import FRAME_SAMPLES, RATE, LibopusDecoder, LibopusEncoder

SENTENCES = (
    ("en-us", "The quick brown fox jumps over the lazy dog while the weather stays calm and clear."),
    ("en-gb", "Please remind me to call my sister at seven thirty tomorrow evening about the trip."),
    ("en-us+f3", "Could you tell me how many kilometres it is from Seoul to Busan by the fast train?"),
    ("en-gb+m3", "I have been feeling a little anxious lately and I would like some advice on sleeping better."),
)
PESQ_RATE = 16_000
APPLICATIONS = {"voip": 2048, "audio": 2049, "restricted-lowdelay": 2051}  # OPUS_APPLICATION_*
_GET_LOOKAHEAD = 4027


class ModeEncoder(LibopusEncoder):
    """:class:`LibopusEncoder` with another libopus application mode (the bridge's is VoIP), for this bench."""

    def __init__(self, application: int, bitrate: int, complexity: int, loss_perc: int) -> None:
        super().__init__(bitrate=bitrate, complexity=complexity, loss_perc=loss_perc)
        if application == APPLICATIONS["voip"]:
            return
        self.close()
        err = ctypes.c_int(0)
        self._enc = self._lib.lib.opus_encoder_create(RATE, 1, application, ctypes.byref(err))
        if err.value != 0 or not self._enc:
            raise OSError(f"opus_encoder_create failed ({err.value})")
        ctl = self._lib.lib.opus_encoder_ctl
        for request, value in ((4002, bitrate), (4012, 1), (4014, loss_perc), (4010, complexity)):
            if ctl(ctypes.c_void_p(self._enc), ctypes.c_int(request), ctypes.c_int32(value)) != 0:
                raise OSError(f"opus_encoder_ctl({request}, {value}) failed")

    @property
    def lookahead_ms(self) -> float:
        samples = ctypes.c_int32(0)
        self._lib.lib.opus_encoder_ctl(ctypes.c_void_p(self._enc), ctypes.c_int(_GET_LOOKAHEAD), ctypes.byref(samples))
        return samples.value / RATE * 1000


def speech_clips() -> list[np.ndarray]:
    """The test sentences as 48 kHz mono int16, each peak-normalised to about -8.7 dBFS."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise BridgeError("espeak-ng is missing: apt-get install espeak-ng")
    clips = []
    for voice, text in SENTENCES:
        wav = subprocess.run([exe, "-v", voice, "-s", "160", "--stdout", text], capture_output=True, check=True)
        rate, pcm = parse_wav(wav.stdout)
        x = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
        x = np.interp(np.arange(int(len(x) * RATE / rate)) * rate / RATE, np.arange(len(x)), x)
        clips.append((x / np.abs(x).max() * 12_000).astype(np.int16))
    return clips


def to_16k(x: np.ndarray) -> np.ndarray:
    """48 kHz -> 16 kHz: a windowed-sinc low-pass at 7.6 kHz (101 taps), then every third sample."""
    n = np.arange(-50, 51)
    cutoff = 7_600 / RATE
    taps = 2 * cutoff * np.sinc(2 * cutoff * n) * np.hamming(len(n))
    return np.convolve(x.astype(np.float64), taps / taps.sum(), mode="same")[::3]


def round_trip(x: np.ndarray, make: Callable[[], LibopusEncoder]) -> np.ndarray:
    """``x`` through a fresh encoder and decoder, whole 20 ms frames only."""
    enc, dec = make(), LibopusDecoder()
    n = len(x) // FRAME_SAMPLES * FRAME_SAMPLES
    return np.concatenate([dec.decode(enc.encode(x[i : i + FRAME_SAMPLES])) for i in range(0, n, FRAME_SAMPLES)])


def encode_us(clips: list[np.ndarray], make: Callable[[], LibopusEncoder], passes: int = 3) -> float:
    """Median over ``passes`` of the mean encode time per frame, in microseconds (hot: back to back)."""
    frames = [c[i : i + FRAME_SAMPLES] for c in clips for i in range(0, len(c) - FRAME_SAMPLES, FRAME_SAMPLES)]
    times = []
    for _ in range(passes):
        enc = make()
        t0 = time.perf_counter()
        for f in frames:
            enc.encode(f)
        times.append((time.perf_counter() - t0) / len(frames) * 1e6)
    return statistics.median(times)


def measure(
    bitrates: list[int], complexities: list[int], losses: list[int], applications: list[str] | None = None
) -> list[dict[str, Any]]:
    try:
        from pesq import pesq  # type: ignore[import-not-found,import-untyped,unused-ignore]  # optional, built from source
    except ImportError as exc:
        raise BridgeError("the pesq package is missing: pip install pesq") from exc
    clips = speech_clips()
    rows = []
    apps = applications or ["voip"]
    grid = ((b, c, lo, a) for a in apps for b in bitrates for c in complexities for lo in losses)
    for bitrate, complexity, loss, app in grid:

        def make(b: int = bitrate, c: int = complexity, lo: int = loss, a: str = app) -> ModeEncoder:
            return ModeEncoder(APPLICATIONS[a], bitrate=b, complexity=c, loss_perc=lo)

        scores = []
        for x in clips:
            y = round_trip(x, make)
            scores.append(pesq(PESQ_RATE, to_16k(x[: len(y)]), to_16k(y), "wb"))  # P.862.2 aligns delay itself
        rows.append(
            {
                "application": app,
                "lookahead_ms": make().lookahead_ms,
                "bitrate": bitrate,
                "complexity": complexity,
                "fec_loss": loss,
                "pesq_wb": float(np.mean(scores)),
                "pesq_wb_min": float(np.min(scores)),
                "encode_us": encode_us(clips, make),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bitrates", default="48000,32000")
    parser.add_argument("--complexities", default="0,1,3,5,9")
    parser.add_argument("--losses", default="0", help="packet loss %% the encoder codes FEC for")
    parser.add_argument("--applications", default="voip", help=f"libopus modes: {', '.join(APPLICATIONS)}")
    args = parser.parse_args(argv)
    bitrates, complexities, losses = (
        [int(v) for v in arg.split(",")] for arg in (args.bitrates, args.complexities, args.losses)
    )
    try:
        rows = measure(bitrates, complexities, losses, [a.strip() for a in args.applications.split(",")])
    except BridgeError as exc:
        print(f"bridge: {exc}", file=sys.stderr)
        return 1
    print(
        "| application | lookahead (ms) | bitrate (kbps) | complexity | FEC for loss (%) | PESQ-WB mean (min) "
        "| encode per frame, hot (us) |"
    )
    print("|---|---:|---:|---:|---:|---|---:|")
    for r in rows:
        print(
            f"| {r['application']} | {r['lookahead_ms']:.1f} | {r['bitrate'] / 1000:.0f} | {r['complexity']:.0f} "
            f"| {r['fec_loss']:.0f} | {r['pesq_wb']:.2f} ({r['pesq_wb_min']:.2f}) | {r['encode_us']:.0f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
