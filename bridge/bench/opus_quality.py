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
FEC's price on a clean network, in quality and in encode time.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

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


def measure(bitrates: list[int], complexities: list[int], losses: list[int]) -> list[dict[str, float]]:
    try:
        from pesq import pesq
    except ImportError as exc:
        raise BridgeError("the pesq package is missing: pip install pesq") from exc
    clips = speech_clips()
    rows = []
    for bitrate, complexity, loss in ((b, c, lo) for b in bitrates for c in complexities for lo in losses):

        def make(b: int = bitrate, c: int = complexity, lo: int = loss) -> LibopusEncoder:
            return LibopusEncoder(bitrate=b, complexity=c, loss_perc=lo)

        scores = []
        for x in clips:
            y = round_trip(x, make)
            scores.append(pesq(PESQ_RATE, to_16k(x[: len(y)]), to_16k(y), "wb"))  # P.862.2 aligns delay itself
        rows.append(
            {
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
    args = parser.parse_args(argv)
    ints = [[int(v) for v in arg.split(",")] for arg in (args.bitrates, args.complexities, args.losses)]
    try:
        rows = measure(*ints)
    except BridgeError as exc:
        print(f"bridge: {exc}", file=sys.stderr)
        return 1
    print("| bitrate (kbps) | complexity | FEC for loss (%) | PESQ-WB mean (min) | encode per frame, hot (us) |")
    print("|---:|---:|---:|---|---:|")
    for r in rows:
        print(
            f"| {r['bitrate'] / 1000:.0f} | {r['complexity']:.0f} | {r['fec_loss']:.0f} "
            f"| {r['pesq_wb']:.2f} ({r['pesq_wb_min']:.2f}) | {r['encode_us']:.0f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
