"""``bridge run`` on REAL audio devices (PulseAudio virtual mic and speaker), both transports.

Tone bursts go into the virtual microphone; the emulator's ``echo`` sends them back; they must come out
of the virtual speaker (bridge.bench.pulse_m2e's harness, one duplex stream, one sample clock).
"""

from __future__ import annotations

import pytest

from bridge.bench.pulse_m2e import measure

try:
    from tests.pulse import Pulse, pulse  # noqa: F401
except ModuleNotFoundError:  # plain `pytest` puts tests/ on sys.path, not the repo
    from pulse import Pulse, pulse  # type: ignore[no-redef]  # noqa: F401

pytestmark = [pytest.mark.pulseaudio, pytest.mark.timeout(90)]


@pytest.mark.parametrize("transport", ["webrtc", "ws"])
def test_bursts_round_trip_through_the_real_device_path(pulse: Pulse, transport: str) -> None:  # noqa: F811
    result = measure(transport, bursts=4, sessions=1)
    assert result["missed"] == 0 and result["n"] == 4, result
    # loopback + echo: well under the 90 ms target typically; generous bound against a loaded CI machine
    assert 20 < float(result["p50"]) < 400, result  # type: ignore[arg-type]
    assert float(result["bridge_peak_rss_mib"]) > 0  # type: ignore[arg-type]
    # a sound card's microphone sends from PortAudio's capture thread (bridge.rtc.fastpath)
    assert result["uplink"] == ("capture thread" if transport == "webrtc" else "-"), result
