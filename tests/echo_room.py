"""pytest fixture: an echo room on the private PulseAudio daemon (bridge/bench/echo_room.py).

While a test holds ``echo_room``, what the virtual speaker ``spk`` plays comes back into the virtual
microphone (``micsink`` -> ``mic``) through PulseAudio's module-loopback: -9 dB after ~30 ms, with reflections
at +7 ms / -16 dB and +23 ms / -22 dB. Use it with the ``pulse`` fixture::

    from tests.echo_room import echo_room  # noqa: F401
    from tests.pulse import pulse  # noqa: F401

    async def test_x(echo_room: EchoRoom) -> None: ...

For another room, ``@pytest.mark.parametrize("echo_room", [RoomSpec(delay_ms=700)], indirect=True)``.
Without PulseAudio the ``pulse`` fixture skips, and tests/conftest.py turns that skip into a failure in CI.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from bridge.bench.echo_room import RoomSpec, running

try:
    from tests.pulse import Pulse
except ModuleNotFoundError:  # plain `pytest` puts tests/ (the conftest's dir), not the repo, on sys.path
    from pulse import Pulse  # type: ignore[no-redef]


@dataclass(frozen=True)
class EchoRoom:
    spec: RoomSpec
    pulse: Pulse


@pytest.fixture
def echo_room(pulse: Pulse, request: pytest.FixtureRequest) -> Iterator[EchoRoom]:
    spec = getattr(request, "param", None) or RoomSpec()
    with running(spec, pulse.env()):
        yield EchoRoom(spec, pulse)
