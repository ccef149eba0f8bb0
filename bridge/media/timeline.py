"""When each block handed to a sound card reaches the speaker, from PortAudio's timestamps.

PortAudio gives every output callback ``outputBufferDacTime`` (when the block's first sample reaches the DAC)
and ``currentTime`` on its stream clock. :class:`PlayoutTimeline` turns them into ``time.monotonic`` and into
a timeline that only steps where the play-out really does: a running stream plays its samples back to back,
so between underruns the time of sample ``n`` is ``anchor + n / rate``, the anchor following the DAC times
slowly: a running mean over the first second, then an average of deviations clipped to 0.1 ms, at most
0.1 ms a second (100 ppm). Callback jitter and a wobbling delay report are smoothed away while the device clock's
drift against ``time.monotonic`` (tens to a few hundred ppm) is followed. An underrun (the device played
silence it was not given) re-anchors at once, and for the next ``settle_s`` a deviation over 1 ms
re-anchors again while the report settles. A deviation over ``snap_s`` re-anchors whenever it comes (a
device restart).

Measured through PulseAudio (docs/benchmarks.md, "Echo cancellation"): the DAC times stay exact across
underruns (+-0.2 ms over 28 of them), while without underruns they wobble by a few ms now and then; taking
such a wobble for a step moved the echo canceller's reference and cost it seconds of cancellation.
"""

from __future__ import annotations


class PlayoutTimeline:
    def __init__(
        self, rate: int, *, alpha: float = 0.005, clip_s: float = 0.0001, snap_s: float = 0.05, settle_s: float = 0.05
    ) -> None:
        self.rate = rate
        self.alpha = alpha
        self.clip = clip_s
        self._updates = 0
        self.snap = snap_s
        self.settle = settle_s
        self.steps = 0
        """Re-anchorings after the first (underruns, restarts)."""
        self._offset: float | None = None  # time.monotonic() - stream time, the least seen
        self._anchor: float | None = None  # play-out time of sample 0 of the stream
        self._count = 0  # device frames handed so far
        self._settle_until = 0.0

    def at(self, frames: int, now: float, dac: float, current: float, underflow: bool) -> float:
        """Play-out time (``time.monotonic``) of the first of ``frames`` handed now; call once per callback."""
        off = self._offset
        d = now - current
        # the thread can be preempted between PortAudio reading its clock and ours, never the other way
        if off is None or d < off or d - off > 0.5:
            off = self._offset = d
        else:
            off = self._offset = off + 1e-4 * (d - off)
        measured = dac + off - self._count / self.rate  # sample 0's play-out time, as this block says
        anchor = self._anchor
        if underflow:
            self._settle_until = now + self.settle
        if anchor is None:
            anchor = measured
            self._updates = 1
        else:
            dev = measured - anchor
            if abs(dev) > self.snap or (now < self._settle_until and abs(dev) > 0.001):
                anchor = measured
                self.steps += 1
                self._updates = 1
            else:  # a running mean at first, then a slow average of clipped deviations
                self._updates += 1
                if self._updates * self.alpha < 1:
                    anchor += dev / self._updates
                else:
                    anchor += self.alpha * max(-self.clip, min(self.clip, dev))
        self._anchor = anchor
        t = anchor + self._count / self.rate
        self._count += frames
        return t
