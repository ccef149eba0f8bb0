"""The uplink's Opus FEC follows the loss the far end reports, as a browser's does.

The server sends RTCP receiver reports for our audio about once a second (RFC 3550 6.4.1), each with the
fraction of our packets lost since the previous one. aiortc keeps the latest as the sender's
``remote-inbound-rtp`` statistics (``fractionLost``, the report's 8-bit fraction). :class:`LossTracker`
smooths it and turns it into the loss the encoder should expect, and :func:`follow_reported_loss` feeds
that to :meth:`bridge.rtc.opus.LibopusEncoder.expect_loss`.

Why: in-band FEC re-codes each frame at a lower rate inside the next packet, so a lost frame can be
rebuilt, but those bits come out of the speech itself, and the encoder works a quarter harder. On a clean
network it is pure cost (docs/benchmarks.md, CPU; PESQ in ``python -m bridge.bench.opus_quality``).
libwebrtc does the same with the loss its receiver reports (``audio_encoder_opus.cc``, packet-loss
adaptation).
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any, Protocol

log = logging.getLogger(__name__)

POLL_S = 0.5  # receiver reports come every ~1 s (aiortc: 0.5-1.5 s apart; browsers: ~1 s)
SMOOTHING = 0.5  # weight of the newest report
MIN_LOSS_PERC = 1.0  # below this, code no FEC: one lost packet in a few hundred is not worth it
MAX_LOSS_PERC = 20  # past this, more FEC bits starve the speech; concealment has to carry the rest


class LossSetting(Protocol):
    loss_perc: int

    def expect_loss(self, percent: int) -> None: ...


class LossTracker:
    """Smoothed reported loss -> the whole percent of loss the encoder should code FEC for."""

    def __init__(self) -> None:
        self.smoothed: float | None = None
        """Percent of our packets the far end lost, smoothed over reports."""
        self.reports = 0

    def update(self, fraction_lost: int) -> int:
        """One receiver report's ``fraction lost`` (0-255, RFC 3550) -> the loss to expect, in percent."""
        percent = 100.0 * min(255, max(0, fraction_lost)) / 256
        self.reports += 1
        self.smoothed = percent if self.smoothed is None else SMOOTHING * percent + (1 - SMOOTHING) * self.smoothed
        return 0 if self.smoothed < MIN_LOSS_PERC else min(MAX_LOSS_PERC, math.ceil(self.smoothed))


async def latest_report(sender: Any) -> Any | None:
    """The sender's newest ``remote-inbound-rtp`` statistics (the last receiver report), if any."""
    stats = await sender.getStats()
    return next((s for s in stats.values() if s.type == "remote-inbound-rtp"), None)


async def follow_reported_loss(sender: Any, encoder: LossSetting, tracker: LossTracker) -> None:
    """Poll the sender's statistics and set the encoder's expected loss from each new report; runs until
    cancelled. A failing poll is logged once and retried: the call does not depend on it."""
    seen: Any = None
    current = encoder.loss_perc
    failed = False
    while True:
        await asyncio.sleep(POLL_S)
        try:
            report = await latest_report(sender)
        except Exception:
            if not failed:
                log.exception("reading the sender's receiver reports failed (uplink FEC stays as it is)")
                failed = True
            continue
        if report is None or report.timestamp == seen:
            continue
        seen = report.timestamp
        expect = tracker.update(int(report.fractionLost))
        if expect != current:
            log.info("uplink FEC for %d %% loss (server reports %.1f %%, smoothed)", expect, tracker.smoothed or 0)
            encoder.expect_loss(expect)
            current = expect
