"""``--aec`` and ``--noise-reduction``: when echo cancellation runs, what the session asks the server for, and
what ``bridge devices`` says. The session config is checked against the official schema's pydantic model."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from openai.types.realtime.realtime_session_create_request import RealtimeSessionCreateRequest

from bridge.app.devices import echo_line
from bridge.call.station import Station, echo_cancellation
from bridge.config import aec_setting
from bridge.errors import ConfigError
from bridge.media import aec
from bridge.media.devices import DeviceSink, DeviceSource
from bridge.media.null import NullSink, NullSource
from bridge.media.wav import WavSink
from tests.helpers import run_config


def test_aec_setting_parses_flags_and_env_values() -> None:
    assert aec_setting(None) == "auto"
    assert [aec_setting(v) for v in ("on", "1", "OFF", "0", "auto")] == ["on", "on", "off", "off", "auto"]
    with pytest.raises(ConfigError, match="on, off or auto"):
        aec_setting("maybe")


def test_auto_is_on_for_two_sound_cards_only() -> None:
    assert echo_cancellation("auto", DeviceSource(), DeviceSink()) is not None
    assert echo_cancellation("auto", NullSource(), DeviceSink()) is None
    assert echo_cancellation("auto", DeviceSource(), WavSink(Path("out.wav"))) is None
    assert echo_cancellation("off", DeviceSource(), DeviceSink()) is None
    with pytest.raises(ConfigError, match="needs a sound card"):
        echo_cancellation("on", DeviceSource(), NullSink())


def test_with_echo_cancellation_the_speaker_is_opened_with_a_steadier_latency() -> None:
    with_aec = Station.for_devices(None, None, paced_replies=True, aec_mode="on")
    without = Station.for_devices(None, None, paced_replies=True, aec_mode="off")
    assert isinstance(with_aec.sink, DeviceSink) and isinstance(without.sink, DeviceSink)
    assert (with_aec.sink.latency_hint, without.sink.latency_hint) == (aec.SPEAKER_LATENCY_S, "low")


def test_a_missing_engine_turns_auto_off_with_one_warning_and_on_into_an_error(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("bridge.call.station.describe_engine", lambda: None)
    monkeypatch.setattr(aec, "_warned", set())
    with caplog.at_level(logging.WARNING):
        assert echo_cancellation("auto", DeviceSource(), DeviceSink()) is None
        assert echo_cancellation("auto", DeviceSource(), DeviceSink()) is None
    assert [r.getMessage() for r in caplog.records] == [
        "echo cancellation off: its engine is not installed (pip install pywebrtc-audio)"
    ]
    with pytest.raises(ConfigError, match="pip install pywebrtc-audio"):
        echo_cancellation("on", DeviceSource(), DeviceSink())


@pytest.mark.parametrize(
    ("flag", "cancels_echo", "expected"),
    [
        (None, True, {"type": "far_field"}),  # open speakers: far field by default
        (None, False, "absent"),  # a headset or files: the API's default (nothing sent)
        ("near_field", True, {"type": "near_field"}),
        ("off", True, None),  # explicitly none
    ],
)
def test_noise_reduction_in_the_session(tmp_path: Path, flag: str | None, cancels_echo: bool, expected: object) -> None:
    flags = ("--noise-reduction", flag) if flag else ()
    session = run_config(tmp_path, "http://127.0.0.1:1/v1", "webrtc", 1.0, *flags).session(cancels_echo)
    audio_in = session["audio"]["input"]
    assert audio_in.get("noise_reduction", "absent") == expected
    RealtimeSessionCreateRequest.model_validate(session)  # the official schema accepts it


def test_bridge_devices_names_the_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    assert echo_line().startswith("echo cancellation: aec3 (pywebrtc-audio ")
    monkeypatch.setattr("bridge.app.devices.describe_engine", lambda: None)
    assert echo_line() == "echo cancellation: not installed (pip install pywebrtc-audio); --aec auto runs without it"
