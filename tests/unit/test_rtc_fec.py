"""Uplink FEC that follows the far end's receiver reports: the policy, the polling, and the encoder."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from bridge.rtc import fec
from bridge.rtc.opus import LibopusDecoder, LibopusEncoder


def voiced(seconds: float = 2.0) -> np.ndarray:
    """A gliding harmonic tone with a syllable rhythm: libopus codes it like voiced speech."""
    t = np.arange(int(48_000 * seconds)) / 48_000
    phase = 2 * np.pi * np.cumsum(140 + 20 * np.sin(2 * np.pi * 2 * t)) / 48_000
    harmonics = sum(np.sin(k * phase) / k for k in range(1, 20))
    return (harmonics * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t)) * 4_000).astype(np.int16)


def recovered_snr_db(expect_loss: int) -> float:
    """Median SNR of frames rebuilt from the next packet's FEC, against decoding them losslessly."""
    sig = voiced()
    enc = LibopusEncoder()
    enc.expect_loss(expect_loss)
    packets = [enc.encode(sig[i : i + 960]) for i in range(0, len(sig), 960)]
    assert enc.loss_perc == expect_loss  # applied by encode(), in the encoding thread
    reference = LibopusDecoder()
    clean = [reference.decode(p) for p in packets]
    snrs = []
    for k in range(10, len(packets) - 1, 7):
        dec = LibopusDecoder()
        for p in packets[:k]:
            dec.decode(p)
        got = dec.conceal(960, packets[k + 1]).astype(np.float64)  # packet k lost, k + 1 arrived
        want = clean[k].astype(np.float64)
        snrs.append(10 * np.log10(np.sum(want**2) / max(1.0, float(np.sum((got - want) ** 2)))))
    return float(np.median(snrs))


def test_fec_bits_appear_only_when_loss_is_expected() -> None:
    assert recovered_snr_db(10) > 10  # the lost frame comes back from the next packet
    assert recovered_snr_db(0) < 6  # no FEC coded: only concealment, which does not reproduce it


def test_tracker_smooths_reports_and_maps_them_to_whole_percents() -> None:
    t = fec.LossTracker()
    assert t.update(0) == 0 and t.smoothed == 0
    assert t.update(2) == 0  # 0.8 % -> 0.4 % smoothed: below the 1 % where FEC starts
    assert t.update(32) == 7  # 12.5 % -> 6.45 % smoothed, rounded up
    assert t.update(32) == 10  # -> 9.5 %
    assert t.update(255) == fec.MAX_LOSS_PERC  # capped
    for _ in range(12):
        last = t.update(0)
    assert last == 0 and t.reports == 17


@dataclass
class Report:
    timestamp: float
    fractionLost: int  # noqa: N815 - aiortc's RTCRemoteInboundRtpStreamStats field
    type: str = "remote-inbound-rtp"


class Sender:
    """What ``follow_reported_loss`` reads: aiortc's ``RTCRtpSender.getStats()``."""

    def __init__(self, reports: list[Any]) -> None:
        self.reports = reports
        self.polls = 0
        self.done = asyncio.Event()  # every report read, and the last one once more

    async def getStats(self) -> dict[str, Any]:  # noqa: N802 - aiortc's name
        self.polls += 1
        if self.polls > len(self.reports):
            self.done.set()
        item = self.reports[min(self.polls, len(self.reports)) - 1]
        if isinstance(item, Exception):
            raise item
        return {} if item is None else {"r": item, "o": Report(0, 0, type="outbound-rtp")}


class Encoder:
    def __init__(self) -> None:
        self.loss_perc = 0
        self.set: list[int] = []

    def expect_loss(self, percent: int) -> None:
        self.set.append(percent)
        self.loss_perc = percent


async def test_each_new_report_sets_the_encoder_once(monkeypatch: pytest.MonkeyPatch, caplog: Any) -> None:
    monkeypatch.setattr(fec, "POLL_S", 0.001)
    r1, r2 = Report(1.0, 26), Report(2.0, 0)
    sender = Sender([None, r1, r1, RuntimeError("stats broke"), RuntimeError("again"), r2, r2])
    enc, tracker = Encoder(), fec.LossTracker()
    task = asyncio.ensure_future(fec.follow_reported_loss(sender, enc, tracker))
    await asyncio.wait_for(sender.done.wait(), 5)
    task.cancel()
    assert enc.set == [11, 6]  # 10.2 % -> 11; then 5.1 % smoothed -> 6; the repeated reports count once
    assert tracker.reports == 2
    assert sum("receiver reports failed" in r.message for r in caplog.records) == 1  # logged once, kept going
