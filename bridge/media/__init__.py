"""Audio endpoints (sounddevice / ``.wav`` / null), the playout buffer and the uplink track.

``open_source(dev)`` / ``open_sink(dev)`` turn a ``DEV`` string (issue #3: an index, a name substring,
a path ending in ``.wav``, ``null``, or None for the default device) into an endpoint. Nothing is opened
until ``start``. ``MicTrack`` lives in :mod:`bridge.media.track` (it imports aiortc).
"""

from __future__ import annotations

from pathlib import Path

from bridge.media.base import (
    FRAME_SAMPLES,
    RATE,
    SAMPLES_PER_MS,
    SINK_BLOCK_SAMPLES,
    AudioSink,
    AudioSource,
    FrameConsumer,
    PlaybackTap,
    Pull,
    SourceFilter,
)
from bridge.media.devices import DeviceSink, DeviceSource
from bridge.media.null import NullSink, NullSource
from bridge.media.playout import FlushResult, PlayoutBuffer, PlayoutEvent
from bridge.media.portaudio import list_devices, resolve_device
from bridge.media.wav import WavSink, WavSource

__all__ = [
    "FRAME_SAMPLES",
    "RATE",
    "SAMPLES_PER_MS",
    "SINK_BLOCK_SAMPLES",
    "AudioSink",
    "AudioSource",
    "DeviceSink",
    "DeviceSource",
    "FlushResult",
    "FrameConsumer",
    "PlaybackTap",
    "NullSink",
    "NullSource",
    "PlayoutBuffer",
    "PlayoutEvent",
    "Pull",
    "SourceFilter",
    "WavSink",
    "WavSource",
    "list_devices",
    "open_sink",
    "open_source",
    "resolve_device",
]


def _kind(dev: str | None) -> str:
    if dev is None or not dev.strip():
        return "device"
    if dev.strip().casefold() == "null":
        return "null"
    if dev.strip().casefold().endswith(".wav"):
        return "wav"
    return "device"


def open_source(dev: str | None) -> AudioSource:
    """The microphone for ``--input DEV``."""
    kind = _kind(dev)
    if kind == "null":
        return NullSource()
    if kind == "wav":
        assert dev is not None
        return WavSource(Path(dev.strip()))
    return DeviceSource(dev.strip() if dev else None)


def open_sink(dev: str | None, *, latency: str | float = "low") -> AudioSink:
    """The speaker for ``--output DEV``; ``latency``: a sound card's output latency (PortAudio's hint, seconds
    or ``"low"``; see :data:`bridge.media.aec.SPEAKER_LATENCY_S`)."""
    kind = _kind(dev)
    if kind == "null":
        return NullSink()
    if kind == "wav":
        assert dev is not None
        return WavSink(Path(dev.strip()))
    return DeviceSink(dev.strip() if dev else None, latency=latency)
