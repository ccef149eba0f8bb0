"""PortAudio through sounddevice: import guard, device list, ``DEV`` lookup and format negotiation.

``sounddevice`` is imported lazily through :func:`sounddevice_module`, which turns the ``OSError`` raised
when libportaudio2 is absent into one clear :class:`AudioError` (ENVIRONMENT.md); ``.wav`` and ``null``
devices never import it. PortAudio enumerates devices once, at initialisation: :func:`rescan` looks again
(no stream may be open). The streams themselves live in :mod:`bridge.media.devices`.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Literal

from bridge.errors import AudioError
from bridge.media.base import RATE

Kind = Literal["input", "output"]
PORTAUDIO_MISSING = "PortAudio is missing: apt-get install libportaudio2"


def sounddevice_module() -> ModuleType:
    """``import sounddevice``, with a missing PortAudio mapped to :class:`AudioError`."""
    try:
        import sounddevice
    except OSError as exc:  # "PortAudio library not found"
        raise AudioError(PORTAUDIO_MISSING) from exc
    module: ModuleType = sounddevice
    return module


def rescan() -> None:
    """Re-initialise PortAudio so devices (e.g. a sound server started after import) are seen.

    PortAudio enumerates devices once, at ``Pa_Initialize``; sounddevice documents ``_terminate()`` and
    ``_initialize()`` for exactly this. No stream may be open.
    """
    sd = sounddevice_module()
    sd._terminate()
    sd._initialize()


@dataclass(frozen=True)
class DeviceInfo:
    index: int
    name: str
    hostapi: str
    max_input_channels: int
    max_output_channels: int
    default_samplerate: float
    default_input: bool
    default_output: bool

    def has(self, kind: Kind) -> bool:
        return (self.max_input_channels if kind == "input" else self.max_output_channels) > 0

    def is_default(self, kind: Kind) -> bool:
        return self.default_input if kind == "input" else self.default_output

    def label(self) -> str:
        return f"[{self.index}] {self.name} ({self.hostapi})"


def list_devices() -> list[DeviceInfo]:
    """Every PortAudio device, with default marks. Empty when no sound system answers."""
    sd = sounddevice_module()
    try:
        devices = sd.query_devices()
        hostapis = sd.query_hostapis()
    except sd.PortAudioError as exc:
        raise AudioError(f"cannot list audio devices: {exc}") from exc
    default_in, default_out = _default_indices(sd)
    return [
        DeviceInfo(
            index=int(d["index"]),
            name=str(d["name"]),
            hostapi=str(hostapis[int(d["hostapi"])]["name"]),
            max_input_channels=int(d["max_input_channels"]),
            max_output_channels=int(d["max_output_channels"]),
            default_samplerate=float(d["default_samplerate"]),
            default_input=int(d["index"]) == default_in,
            default_output=int(d["index"]) == default_out,
        )
        for d in devices
    ]


def _default_indices(sd: Any) -> tuple[int, int]:
    dev = sd.default.device
    out: list[int] = []
    for i, kind in enumerate(("input", "output")):
        value = dev[i]
        if isinstance(value, str):
            try:
                value = sd.query_devices(value, kind)["index"]
            except (ValueError, sd.PortAudioError):
                value = -1
        out.append(-1 if value is None else int(value))
    return out[0], out[1]


def resolve_device(spec: str | int | None, kind: Kind) -> int | None:
    """``DEV`` to a PortAudio index: an index, a case-insensitive name substring, or None (default).

    An exact (case-insensitive) name wins over substring matches; zero or several matches raise one
    :class:`AudioError` that lists the candidates.
    """
    devices = [d for d in list_devices() if d.has(kind)]
    if not devices:
        raise AudioError(f"no audio {kind} devices found (is a sound server running? try `bridge devices`)")
    if spec is None or (isinstance(spec, str) and not spec.strip()):
        if not any(d.is_default(kind) for d in devices):
            raise AudioError(f"no default {kind} device; choose one with --{kind} (see `bridge devices`)")
        return None
    candidates = ", ".join(d.label() for d in devices)
    text = str(spec).strip()
    if isinstance(spec, int) or text.lstrip("-").isdigit():
        index = int(text)
        for d in devices:
            if d.index == index:
                return index
        raise AudioError(f"no {kind} device with index {index}; {kind} devices: {candidates}")
    needle = text.casefold()
    exact = [d for d in devices if d.name.casefold() == needle]
    if len(exact) == 1:
        return exact[0].index
    matches = exact or [d for d in devices if needle in d.name.casefold()]
    if len(matches) == 1:
        return matches[0].index
    if not matches:
        raise AudioError(f"no {kind} device matches {text!r}; {kind} devices: {candidates}")
    listed = ", ".join(d.label() for d in matches)
    raise AudioError(f"{kind} device {text!r} is ambiguous: {listed} (use an index)")


def choose_format(sd: Any, device: int | None, kind: Kind) -> tuple[int, int]:
    """(rate, channels): 48 kHz mono when the device takes it, else its default rate / 2 channels."""
    check = sd.check_input_settings if kind == "input" else sd.check_output_settings
    info = sd.query_devices(device, kind)
    for rate in (RATE, int(info["default_samplerate"])):
        for channels in (1, 2):
            try:
                check(device=device, samplerate=rate, channels=channels, dtype="int16")
            except (sd.PortAudioError, ValueError):
                continue
            return rate, channels
    raise AudioError(f"{kind} device {info['name']!r} accepts neither 48 kHz nor its default rate (int16)")


def device_name(sd: Any, device: int | None, kind: Kind) -> str:
    try:
        return str(sd.query_devices(device, kind)["name"])
    except (ValueError, sd.PortAudioError):
        return "default"


def name_this_thread(name: str) -> None:
    """Give the calling OS thread a name (Linux ``prctl(PR_SET_NAME)``, 15 bytes), so that ``top -H`` and
    ``python -m bridge.bench.cpu --threads`` tell PortAudio's microphone and speaker threads apart."""
    try:
        libc = ctypes.CDLL(None)
        libc.prctl(15, name.encode()[:15], 0, 0, 0)  # PR_SET_NAME
    except (OSError, AttributeError):  # not Linux: the threads keep their names
        pass
