"""Acoustic echo cancellation for open speakers: the microphone must not hear the assistant (issue #16).

One class, :class:`EchoCanceller`, sits in both audio threads of a sound-card pair:

- as the speaker's :class:`~bridge.media.base.PlaybackTap` it is given every block the output callback hands
  to PortAudio (after flushes, fades and gating: exactly what is played), with the time it sounds;
- as the microphone's :class:`~bridge.media.base.SourceFilter` it takes each 20 ms frame in the capture
  thread, before the uplink encodes and sends it, and returns the frame with the echo removed.

In between: :class:`~bridge.media.farend.FarEnd` pairs each 10 ms of microphone audio with what was played
at the same moment by PortAudio's timestamps, so the echo reaches the engine the acoustic delay (plus the
timestamps' error) after its reference. The engine (:mod:`bridge.media.aec_engine`, WebRTC AEC3) finds that
rest itself within ~0-500 ms; it cancels nothing when the echo comes before its reference (docs/
benchmarks.md). :class:`~bridge.media.echo_delay.DelayEstimator` measures the whole delay over -0.1..1.2 s
and moves the pairing when the rest leaves ``comfort_ms``: a longer path (Bluetooth, USB, PipeWire) is
pre-aligned into AEC3's range, timestamps that put the echo early are paired further ahead. The measured
delay is what :func:`attach` persists per device pair for a warm start: the first reply of the next run is
aligned from its first sample.

AEC3 delays its output by ~9 ms. While nothing has been played for ``tail_ms`` (no echo is possible) the
microphone passes through untouched and undelayed; the engine keeps running so it stays converged, and the
switches splice across the lag with a 2.5 ms crossfade (a 9 ms repeat when echo becomes possible, a 9 ms
skip when it no longer is). So the user's turn costs no latency; only speech over the assistant carries the
lag (``bypass_idle=False`` turns this off).

The very first reply on a device pair whose echo comes later than AEC3 reaches (~500 ms) and that has no
persisted delay yet would be heard before the estimator has found it (~1-4 s of speech). For that case
:func:`calibration_sound` is a quiet 0.6 s noise burst (-30 dBFS) to play once at start-up, when
:attr:`Attachment.warm` is False: the estimator finds any delay up to 1.2 s from it within ~2 s.

Use :func:`attach` (one call for a :class:`~bridge.media.devices.DeviceSource` and
:class:`~bridge.media.devices.DeviceSink` pair); it returns None, after ONE warning line, when the engine's
wheel is missing, and the caller carries on without echo cancellation.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np

from bridge.media.aec_engine import INSTALL_HINT, EchoEngine, EngineName, load_engine
from bridge.media.echo_delay import DelayEstimator
from bridge.media.farend import FarEnd, OffsetTracker

if TYPE_CHECKING:
    from bridge.media.devices import DeviceSink, DeviceSource

log = logging.getLogger(__name__)

RATE = 48_000
CHUNK = RATE // 100
SPEAKER_LATENCY_S = 0.04
"""The speaker's output latency while the canceller runs (PortAudio's hint; ``"low"``, ~10 ms, otherwise).
With ``"low"`` a busy CPU makes the speaker's timing jitter (underruns, late far-end reads) and the canceller
leaks the reply into the microphone: the echo room under 1-2 busy processes measured 8.4-8.9
self-interruptions per minute of reply at 10 ms, 2.1 at 20 ms, none at 30 and 40 ms (0 underruns);
40 ms keeps a margin. The cost, +30 ms before the speaker is heard and goes quiet, is an open-speaker
kiosk's only (docs/benchmarks.md, Echo cancellation)."""
_FAR_ACTIVE = CHUNK * (32768 * 10 ** (-60 / 20)) ** 2  # chunk energy of -60 dBFS RMS
_XFADE = RATE * 25 // 10_000  # 2.5 ms
_MAX_LOOKAHEAD = 0.2  # never pair further ahead than this (timestamps that wrong are a broken device)
_MAX_LATE_SHIFT = 0.1  # late reads never push the pairing back further than this


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name, "").strip()
    return Path(value) if value else None


def default_state_file() -> Path:
    """``$XDG_STATE_HOME/bridge/aec.json`` (``~/.local/state/bridge/aec.json``)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "bridge" / "aec.json"


@dataclass(frozen=True)
class AecSettings:
    engine: EngineName = "aec3"
    lead_ms: float = 0.0
    """Pair the microphone with what is played this much later (by the timestamps). 0: the engine sees the
    acoustic delay plus the timestamps' error. A lead guards against timestamps that put the echo before its
    reference, but needs the speaker's callback that much further ahead of the microphone's: on a busy
    machine (PulseAudio devices, load average 5-8) a 10 ms lead found the speaker's block not yet written 15-60
    times per 12 s and fed the engine zeros. The delay estimator moves the pairing either way when the rest
    leaves ``comfort_ms``; when most reads come late (the callback on time but the audio not there) the pairing
    moves 1 ms further back at a time."""
    target_ms: float = 30.0
    """When pre-aligning a long path, leave the engine this much of the delay."""
    comfort_ms: tuple[float, float] = (6.0, 400.0)
    """Residual delays (after pre-alignment) the engine handles well; outside them the reference is moved."""
    tail_ms: float = 500.0
    """How long after the last played sound echo may still arrive (room reverb and the engine's range)."""
    bypass_idle: bool = True
    """Pass the microphone through undelayed while no echo is possible (see the module docstring)."""
    estimate_every_s: float = 0.5
    state_file: Path | None = field(default_factory=default_state_file)
    """Where :func:`attach` keeps each device pair's measured delay (None: no warm start)."""
    dump_dir: Path | None = field(default_factory=lambda: _env_path("BRIDGE_AEC_DUMP"))
    """Write what the engine sees and gives (``near.raw``, ``far.raw``, ``out.raw``: 48 kHz mono int16, the
    far end as paired) into this directory, for diagnosis (``BRIDGE_AEC_DUMP``; like WebRTC's aecdump)."""


@dataclass(frozen=True)
class AecMetrics:
    engine: str
    erle_db: float | None
    """Echo return loss enhancement over recent far-end activity (None: no measurable echo yet)."""
    delay_ms: float | None
    """Echo delay behind PortAudio's play-out timestamps, as measured (None: not yet)."""
    prealign_ms: float
    """How far back the reference is taken (0 unless a long path was found or warm-started)."""
    converged: bool
    in_path: bool
    """The engine's output is what the microphone sends (False: idle bypass)."""
    lag_ms: float
    frames: int
    far_late: int
    far_jumps: int
    far_steps: int
    far_starved: int
    realigns: int
    switches: int

    def line(self) -> str:
        """One line for logs: ``aec3 erle=31.2dB delay=42ms converged ...``."""
        erle = "-" if self.erle_db is None else f"{self.erle_db:.1f}dB"
        delay = "-" if self.delay_ms is None else f"{self.delay_ms:.0f}ms"
        return (
            f"{self.engine} erle={erle} delay={delay} prealign={self.prealign_ms:.0f}ms "
            f"{'converged' if self.converged else 'converging'} {'active' if self.in_path else 'idle'} "
            f"late={self.far_late} realigns={self.realigns}"
        )


class EchoCanceller:
    """Far end in (:meth:`played`, output thread), near end through (:meth:`process`, capture thread)."""

    def __init__(
        self, engine: EchoEngine, settings: AecSettings | None = None, *, initial_delay_ms: float | None = None
    ) -> None:
        self.settings = settings or AecSettings()
        self.engine = engine
        if engine.rate != RATE:
            raise ValueError(f"the echo canceller runs at {RATE} Hz (engine: {engine.rate})")
        self.far = FarEnd(rate=RATE)
        self.estimator = DelayEstimator(rate=RATE)
        s = self.settings
        self._shift = -s.lead_ms / 1000
        """Pair the microphone at ``t`` with what was played at ``t - shift``."""
        self._min_shift = -_MAX_LOOKAHEAD
        """Raised by late reads: the device hands audio over too late to pair further ahead than this."""
        self._delay: float | None = None
        if initial_delay_ms is not None:  # warm start: pre-align at once if the last run needed it
            self._delay = initial_delay_ms / 1000
            self._place(self._delay)
        # Capture time of near sample 0 (20 ms frames). Never stepped: a microphone's callbacks coming later
        # (PulseAudio raising a busy client's latency) does not mean its samples were captured later; only
        # drift is followed, by at most 0.1 ms per second (100 ppm): faster slides seen on PulseAudio devices
        # were the timestamps wobbling (one clock for both devices there), and AEC3 follows the rest of a real
        # drift itself (208 ppm uncompensated for 60 s: 40.9 dB, docs/benchmarks.md).
        self._near = OffsetTracker(0.01, clip_s=0.0002)
        self._near_count = 0
        self._chunks = 0
        self._last_far_chunk = -(10**9)
        self._loud_writes_seen = 0
        self._tail_chunks = int(s.tail_ms / 10)
        self._in_path = not s.bypass_idle
        self._prev: float | None = None
        self._every = max(1, int(s.estimate_every_s * 100))
        self._p_near = 0.0
        self._p_out = 0.0
        self._floor = math.inf
        self._far_seconds = 0.0
        self._good = 0.0
        self._late_seen = 0
        self._late_rate = 0.0
        self.realigns = 0
        self.switches = 0
        self._erle: float | None = None  # read by metrics() from any thread: one float, replaced whole
        self._dump: tuple[BinaryIO, ...] | None = None
        if s.dump_dir is not None:
            s.dump_dir.mkdir(parents=True, exist_ok=True)
            self._dump = tuple((s.dump_dir / f"{name}.raw").open("wb") for name in ("near", "far", "out"))

    # ---------------------------------------------------------------- output thread (PlaybackTap)

    def played(self, pcm: np.ndarray, at: float) -> None:
        self.far.write(pcm, at)

    # ---------------------------------------------------------------- capture thread (SourceFilter)

    def process(self, pcm: np.ndarray, captured: float) -> np.ndarray:
        n = len(pcm)
        if n % CHUNK:
            raise ValueError(f"echo cancellation takes whole 10 ms chunks ({CHUNK} samples), got {n}")
        near_offset = self._near.update(captured - (n - 1) / RATE - self._near_count / RATE)
        out = np.empty(n, dtype=np.int16)
        for k in range(0, n, CHUNK):
            near = pcm[k : k + CHUNK]
            t = near_offset + (self._near_count + k) / RATE
            far = self.far.read(t, CHUNK, self._shift)
            cleaned = self.engine.process(near, far)
            if self._dump is not None:
                for f, x in zip(self._dump, (near, far, cleaned), strict=True):
                    f.write(x.tobytes())
            self.estimator.push(near, far)
            out[k : k + CHUNK] = self._route(near, cleaned, far)
            self._chunks += 1
            if self._chunks % self._every == 0:
                self._reestimate()
        self._near_count += n
        late, self._late_seen = self.far.late - self._late_seen, self.far.late
        self._late_rate += 0.02 * (late * CHUNK / n - self._late_rate)
        if self._late_rate > 0.2 and self._shift < _MAX_LATE_SHIFT:
            # most reads find the speaker's audio not yet handed over although its callback keeps time: the
            # timestamps put the play-out earlier than the device can; pair 1 ms further back (a busy machine's
            # occasional late read is not this: those stay far below 20 %)
            self._late_rate = 0.0
            self._shift += 0.001
            self._min_shift = self._shift
        return out

    def _route(self, near: np.ndarray, cleaned: np.ndarray, far: np.ndarray) -> np.ndarray:
        """The chunk to send: the engine's output while echo is possible, else the microphone itself."""
        far_e = float(np.dot(far.astype(np.float64), far))
        if far_e > _FAR_ACTIVE:
            self._last_far_chunk = self._chunks
        # Echo is possible when the reference paired with this chunk was loud lately, and also as soon as
        # anything loud has been handed to the speaker: on a busy machine the pairing can lag the echo by
        # tens of ms, and bypassing until the reference catches up let each reply's first ~100 ms through
        # (the server took it for the user: a kiosk under load interrupted every reply at ~150 ms).
        loud_writes = self.far.loud_writes
        if loud_writes != self._loud_writes_seen:
            self._loud_writes_seen = loud_writes
            self._last_far_chunk = self._chunks
        echo_possible = self._chunks - self._last_far_chunk <= self._tail_chunks
        self._measure(near, cleaned, echo_possible)
        want = echo_possible or not self.settings.bypass_idle
        if want == self._in_path:
            return cleaned if want else near
        self._in_path = want
        self.switches += 1
        a, b = (near, cleaned) if want else (cleaned, near)
        ramp = np.linspace(0.0, 1.0, _XFADE, endpoint=False)
        out = b.astype(np.float64)
        out[:_XFADE] = a[:_XFADE] * (1 - ramp) + b[:_XFADE] * ramp
        return np.round(out).astype(np.int16)

    def _measure(self, near: np.ndarray, cleaned: np.ndarray, echo_possible: bool) -> None:
        e_near = float(np.dot(near.astype(np.float64), near))
        e_out = float(np.dot(cleaned.astype(np.float64), cleaned))
        if not echo_possible:  # the microphone's own floor: follows quiet quickly, noise slowly
            self._floor = e_near if e_near < self._floor else self._floor + 0.002 * (e_near - self._floor)
            return
        self._far_seconds += 0.01
        self._p_near += 0.05 * (e_near - self._p_near)
        self._p_out += 0.05 * (e_out - self._p_out)
        erle: float | None = None
        floor = self._floor if math.isfinite(self._floor) else 0.0
        if self._p_near > 4 * floor + 1.0 and self._far_seconds > 0.3:
            erle = 10 * math.log10(self._p_near / max(self._p_out, 1.0))
            if erle >= 15.0:
                self._good += 0.01
        elif self._far_seconds > 1.0:
            self._good += 0.01  # no echo above the microphone's floor: nothing to cancel
        self._erle = erle

    def _reestimate(self) -> None:
        est = self.estimator.estimate()
        if est is None:
            return
        delay = est.lag_s + self._shift
        prev, self._prev = self._prev, delay
        if prev is None or abs(prev - delay) > 0.002:
            return  # two agreeing estimates in a row
        self._delay = delay
        erle = self._erle
        if erle is not None and erle >= 20.0:
            return  # the engine cancels well where it is: a correlation peak elsewhere is not worth a re-alignment
        if self._place(delay):
            self.far.reset_read()
            self.engine.reset()  # its filters were adapted to the old alignment: start them afresh
            self.estimator.reset()
            self._prev = None
            self.realigns += 1  # (no logging here: this is PortAudio's thread; metrics() shows it)

    def _place(self, delay: float) -> bool:
        """If ``delay`` leaves the engine a rest outside ``comfort_ms``, move the pairing so that it sees
        ``target_ms`` instead; True if it moved."""
        low, high = (v / 1000 for v in self.settings.comfort_ms)
        if low <= delay - self._shift <= high:
            return False
        shift = max(self._min_shift, delay - self.settings.target_ms / 1000)
        if abs(shift - self._shift) < 0.005:
            return False
        self._shift = shift
        return True

    def close(self) -> None:
        """Once no thread feeds it any more: close the dump files (if any)."""
        dump, self._dump = self._dump, None
        for f in dump or ():
            f.close()

    # ---------------------------------------------------------------- any thread

    @property
    def delay_ms(self) -> float | None:
        return None if self._delay is None else 1000 * self._delay

    def metrics(self) -> AecMetrics:
        erle = self._erle
        return AecMetrics(
            engine=self.engine.name,
            erle_db=None if erle is None else round(erle, 1),
            delay_ms=None if self._delay is None else round(1000 * self._delay, 1),
            prealign_ms=round(1000 * max(0.0, self._shift), 1),
            converged=self._good >= 0.5,
            in_path=self._in_path,
            lag_ms=round(1000 * self.engine.lag / RATE, 2),
            frames=self._chunks,
            far_late=self.far.late,
            far_jumps=self.far.jumps,
            far_steps=self.far.steps,
            far_starved=self.far.starved,
            realigns=self.realigns,
            switches=self.switches,
        )


# -------------------------------------------------------------------- construction and persistence

_warned: set[str] = set()


def warn_missing_engine(engine: EngineName = "aec3") -> None:
    """ONE warning line per process: echo cancellation is off because its engine is not installed."""
    if engine not in _warned:
        _warned.add(engine)
        log.warning("echo cancellation off: its engine is not installed (%s)", INSTALL_HINT)


def create(settings: AecSettings | None = None, *, initial_delay_ms: float | None = None) -> EchoCanceller | None:
    """An :class:`EchoCanceller`, or None with ONE warning line (per process) when the engine is missing."""
    settings = settings or AecSettings()
    engine = load_engine(settings.engine)
    if engine is None:
        warn_missing_engine(settings.engine)
        return None
    return EchoCanceller(engine, settings, initial_delay_ms=initial_delay_ms)


def _pair_key(source: DeviceSource, sink: DeviceSink) -> str:
    return f"{source.name or source.device or 'default'} -> {sink.name or sink.device or 'default'}"


def load_delay(path: Path | None, key: str) -> float | None:
    """The delay (ms) persisted for ``key``, or None (no file, unreadable, other devices)."""
    if path is None:
        return None
    try:
        data = json.loads(path.read_text())
        value = data["pairs"][key]["delay_ms"]
        return float(value) if isinstance(value, int | float) and 0 <= value <= 2000 else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def save_delay(path: Path | None, key: str, delay_ms: float) -> None:
    """Persist ``delay_ms`` for ``key`` (atomic replace; errors logged, never raised)."""
    if path is None:
        return
    try:
        try:
            data = json.loads(path.read_text())
            pairs = data.get("pairs", {}) if isinstance(data, dict) else {}
        except (OSError, ValueError):
            pairs = {}
        pairs[key] = {"delay_ms": round(delay_ms, 1), "saved": time.time()}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pairs": pairs}, indent=1))
        tmp.replace(path)
    except OSError as exc:
        log.warning("could not save the echo delay to %s: %s", path, exc)


def calibration_sound(seconds: float = 0.6, level_dbfs: float = -30.0, seed: int = 16) -> np.ndarray:
    """A quiet noise burst (48 kHz int16, 20 ms fades) from which the delay estimator finds the echo path."""
    n = int(seconds * RATE)
    x = np.random.default_rng(seed).normal(0.0, 1.0, n)
    x *= 32768 * 10 ** (level_dbfs / 20) / max(float(np.sqrt(np.mean(x**2))), 1e-9)
    fade = RATE // 50
    x[:fade] *= np.linspace(0.0, 1.0, fade)
    x[-fade:] *= np.linspace(1.0, 0.0, fade)
    return np.clip(np.round(x), -32768, 32767).astype(np.int16)


class Attachment:
    """An :class:`EchoCanceller` installed on a device pair; :meth:`detach` removes it and saves the delay."""

    def __init__(self, canceller: EchoCanceller, source: DeviceSource, sink: DeviceSink, key: str) -> None:
        self.canceller = canceller
        self.source = source
        self.sink = sink
        self.key = key
        self.warm = canceller.delay_ms is not None
        """A delay was persisted for this device pair: the reference is aligned from the first sample."""
        self._attached = True

    def metrics(self) -> AecMetrics:
        return self.canceller.metrics()

    def detach(self) -> None:
        """Uninstall the filter and the tap (idempotent) and persist the measured delay for a warm start.

        Only at the end of both streams: a canceller cannot move to a reopened speaker. Each new output
        stream has its own timing error (through PulseAudio the echo sat 4-13 ms elsewhere behind the
        timestamps from one stream to the next, and slid 1-3 ms in a new stream's first seconds), and a
        canceller converged on the old one leaked the first words of the next reply (docs/benchmarks.md)."""
        if not self._attached:
            return
        self._attached = False
        self.source.remove_filter(self.canceller)
        self.sink.remove_tap(self.canceller)
        self.canceller.close()
        delay = self.canceller.delay_ms
        if delay is not None:
            save_delay(self.canceller.settings.state_file, self.key, delay)


def attach(source: DeviceSource, sink: DeviceSink, settings: AecSettings | None = None) -> Attachment | None:
    """Install echo cancellation on a started microphone/speaker pair (the device names key the warm start).

    Returns None (one warning line) when the engine is missing. Call :meth:`Attachment.detach` at the end.
    """
    settings = settings or AecSettings()
    key = _pair_key(source, sink)
    canceller = create(settings, initial_delay_ms=load_delay(settings.state_file, key))
    if canceller is None:
        return None
    sink.add_tap(canceller)
    source.add_filter(canceller)
    log.info(
        "echo cancellation: %s (lag %.1f ms, warm-start delay %s)",
        canceller.engine.name,
        1000 * canceller.engine.lag / RATE,
        "-" if canceller.delay_ms is None else f"{canceller.delay_ms:.0f} ms",
    )
    return Attachment(canceller, source, sink, key)
