"""Device lookup, the PortAudio guard, `bridge devices` output and the streaming resampler (no sound card)."""

from __future__ import annotations

import builtins
import io
import sys

import cffi
import numpy as np
import pytest

from bridge.app import devices as app_devices
from bridge.errors import AudioError
from bridge.media import devices, portaudio
from bridge.media.devices import FrameCutter
from bridge.media.portaudio import DeviceInfo
from bridge.media.resample import LinearResampler, to_mono


def dev(index: int, name: str, ins: int = 2, outs: int = 2, d_in: bool = False, d_out: bool = False) -> DeviceInfo:
    return DeviceInfo(index, name, "ALSA", ins, outs, 48000.0, d_in, d_out)


FAKE = [
    dev(0, "HDA Intel PCH: ALC3246 Analog (hw:0,0)", d_in=True, d_out=True),
    dev(1, "USB Headset: Audio (hw:1,0)"),
    dev(2, "pulse"),
    dev(3, "Monitor of USB Headset", ins=2, outs=0),
    dev(4, "HDMI 0 (hw:0,3)", ins=0, outs=8),
]


@pytest.fixture
def fake_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(portaudio, "list_devices", lambda: list(FAKE))


@pytest.mark.usefixtures("fake_devices")
def test_resolve_by_index_name_and_default() -> None:
    assert portaudio.resolve_device(None, "input") is None
    assert portaudio.resolve_device("", "output") is None
    assert portaudio.resolve_device("1", "input") == 1
    assert portaudio.resolve_device(4, "output") == 4
    assert portaudio.resolve_device("PULSE", "output") == 2
    assert portaudio.resolve_device("hdmi", "output") == 4
    assert portaudio.resolve_device("monitor", "input") == 3


@pytest.mark.usefixtures("fake_devices")
def test_resolve_errors_list_candidates() -> None:
    with pytest.raises(AudioError, match=r"ambiguous: \[1\] USB Headset.*\[3\] Monitor of USB Headset"):
        portaudio.resolve_device("usb headset", "input")
    assert portaudio.resolve_device("usb headset", "output") == 1  # the monitor has no outputs
    with pytest.raises(AudioError, match=r"no input device matches 'hdmi'; input devices: \[0\]"):
        portaudio.resolve_device("hdmi", "input")
    with pytest.raises(AudioError, match="no output device with index 3"):
        portaudio.resolve_device("3", "output")


def test_resolve_with_no_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(portaudio, "list_devices", lambda: [])
    with pytest.raises(AudioError, match="no audio input devices found"):
        portaudio.resolve_device(None, "input")


def test_missing_portaudio_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def fake_import(name: str, *args: object, **kwargs: object) -> object:
        if name == "sounddevice":
            raise OSError("PortAudio library not found")
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.delitem(sys.modules, "sounddevice", raising=False)
    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(AudioError, match="PortAudio is missing: apt-get install libportaudio2"):
        portaudio.sounddevice_module()
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    assert app_devices.main(None) == 1
    assert err.getvalue().strip() == "bridge devices: error: PortAudio is missing: apt-get install libportaudio2"


def test_devices_table(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(app_devices, "list_devices", lambda: list(FAKE))
    out = io.StringIO()
    assert app_devices.main(None, out) == 0
    text = out.getvalue()
    lines = text.splitlines()
    assert lines[0].split() == ["#", "name", "host", "API", "rate", "in", "out"]
    assert lines[1].startswith("><") and "HDA Intel PCH" in lines[1] and "48000" in lines[1]
    assert "HDMI 0 (hw:0,3)" in text and "4 input and 4 output devices" in text


def test_devices_none_found(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(app_devices, "list_devices", lambda: [])
    out = io.StringIO()
    assert app_devices.main(None, out) == 0
    assert "no audio devices found" in out.getvalue()


@pytest.mark.parametrize(("src", "dst"), [(44_100, 48_000), (48_000, 44_100), (16_000, 48_000), (48_000, 96_000)])
def test_resampler_streams_without_drift(src: int, dst: int) -> None:
    rs = LinearResampler(src, dst)
    x = (10_000 * np.sin(2 * np.pi * 440 * np.arange(src) / src)).astype(np.int16)  # 1 s
    rng = np.random.default_rng(0)
    parts, pos = [], 0
    while pos < len(x):
        n = int(rng.integers(1, 700))
        parts.append(rs.process(x[pos : pos + n]))
        pos += n
    y = np.concatenate(parts)
    assert 0 <= dst - len(y) <= dst // src + 1  # the last fraction of an input sample waits for more input
    ref = 10_000 * np.sin(2 * np.pi * 440 * np.arange(len(y)) / dst)
    # No delay (the first output sits on the first input); linear interpolation error is small at 440 Hz.
    assert np.max(np.abs(y - ref)) < 150


def test_resampler_inputs_needed_is_enough() -> None:
    rs = LinearResampler(48_000, 44_100)
    total = 0
    for _ in range(200):
        need = rs.inputs_needed(441)
        got = rs.process(np.zeros(need, np.int16))
        assert len(got) >= 441 - 1
        total += len(got)
    assert total == pytest.approx(200 * 441, abs=2)


def test_to_mono() -> None:
    st = np.array([[100, 300], [-100, -300]], np.int16)
    np.testing.assert_array_equal(to_mono(st), [200, -200])
    np.testing.assert_array_equal(to_mono(st[:, :1]), [100, -100])


def test_raw_output_callback_interleaves_and_survives_errors() -> None:
    """The output callback writes the pulled int16 samples into PortAudio's raw buffer, per channel."""
    sink = devices.DeviceSink(None)
    sink._pull = lambda n: np.arange(n, dtype=np.int16) + 1
    sink.channels = 2
    ffi = cffi.FFI()
    out = ffi.buffer(ffi.new("char[]", 4 * 3))  # what sounddevice's raw streams pass: 3 stereo int16 frames
    sink._callback(out, 3, None, None)
    np.testing.assert_array_equal(np.frombuffer(out, np.int16), [1, 1, 2, 2, 3, 3])

    def broken(n: int) -> np.ndarray:
        raise ValueError("bug upstream")

    sink._pull = broken
    sink._callback(out, 3, None, None)
    assert sink.faults.count == 1 and not any(bytes(out))  # silence, not a dead audio thread


async def test_raw_input_callback_hands_over_whole_frames_in_mono() -> None:
    """Two 10 ms stereo blocks become one 20 ms mono frame on the loop, stamped with the capture time."""
    import asyncio

    src = devices.DeviceSource(None)
    src._cutter = FrameCutter(48_000, 2)
    src._loop = asyncio.get_running_loop()
    src._stream = type("Stream", (), {"active": True})()
    left = np.arange(960, dtype=np.int16)
    stereo = np.stack([left, left + 2], axis=1).reshape(-1)  # interleaved L R
    src._callback(memoryview(stereo[:960].tobytes()), 480, None, None)
    assert not src._queue  # half a frame: nothing crosses threads yet
    src._callback(memoryview(stereo[960:].tobytes()), 480, None, None)
    frame = await asyncio.wait_for(src.read(), 1)
    np.testing.assert_array_equal(frame, left + 1)
    assert src.last_frame_mono is not None and src.dropped == 0


async def test_a_capture_consumer_gets_frames_in_the_callback_thread_and_nothing_is_queued() -> None:
    """With a consumer set, PortAudio's thread cuts the frame (mono, 48 kHz) and hands it over right there;
    ``None`` puts frames back on the loop's queue."""
    import asyncio
    import threading

    src = devices.DeviceSource(None)
    src._cutter = FrameCutter(48_000, 2)
    src._loop = asyncio.get_running_loop()
    src._stream = type("Stream", (), {"active": True})()
    got: list[tuple[np.ndarray, float, int]] = []
    src.capture_to(lambda pcm, captured: got.append((pcm, captured, threading.get_ident())))
    left = np.arange(1920, dtype=np.int16)
    stereo = np.stack([left, left + 2], axis=1).reshape(-1)

    def portaudio() -> None:
        for k in range(4):  # four 10 ms blocks: two frames
            src._callback(memoryview(stereo[960 * k : 960 * (k + 1)].tobytes()), 480, None, None)

    thread = threading.Thread(target=portaudio)
    thread.start()
    thread.join()
    assert len(got) == 2 and {t for _, _, t in got} == {thread.ident}
    np.testing.assert_array_equal(np.concatenate([pcm for pcm, _, _ in got]), left + 1)
    assert got[0][1] <= got[1][1] and src.last_frame_mono == got[1][1]
    await asyncio.sleep(0.01)
    assert not src._queue and src.dropped == 0
    src.capture_to(None)
    src._callback(memoryview(stereo[:960].tobytes()), 480, None, None)
    src._callback(memoryview(stereo[960:1920].tobytes()), 480, None, None)
    frame = await asyncio.wait_for(src.read(), 1)
    np.testing.assert_array_equal(frame, left[:960] + 1)
    assert len(got) == 2


async def test_a_44k1_stereo_microphone_reaches_the_consumer_as_continuous_48k_frames() -> None:
    """A kiosk's USB microphone at 44.1 kHz: the capture thread resamples and cuts 20 ms frames at 48 kHz
    with no seam between them."""
    import asyncio
    import threading

    src = devices.DeviceSource(None)
    src.rate = 44_100
    src._cutter = FrameCutter(44_100, 2)
    src._loop = asyncio.get_running_loop()
    frames: list[np.ndarray] = []
    src.capture_to(lambda pcm, captured: frames.append(pcm))
    t = np.arange(44_100) / 44_100
    tone = (np.sin(2 * np.pi * 1000 * t) * 8000).astype(np.int16)
    stereo = np.stack([tone, tone], axis=1).reshape(-1)

    def portaudio() -> None:
        for k in range(86):  # ~1 s in blocks of 512 frames (devices that insist on powers of two)
            src._callback(memoryview(stereo[1024 * k : 1024 * (k + 1)].tobytes()), 512, None, None)

    thread = threading.Thread(target=portaudio)
    thread.start()
    thread.join()
    assert len(frames) in (49, 50) and all(len(f) == 960 for f in frames)  # 86 * 512 in = 49.9 frames out
    audio = np.concatenate(frames).astype(np.float64)
    spectrum = np.abs(np.fft.rfft(audio))
    assert float(np.argmax(spectrum[1:]) + 1) * 48_000 / len(audio) == pytest.approx(1000, abs=5)
    # a 1 kHz sine at 48 kHz moves at most 8000 * 2 * pi * 1000 / 48000 ~ 1047 per sample: no seams
    assert np.abs(np.diff(audio)).max() < 1100
