"""Emulator settings: one frozen dataclass built from CLI flags (or test overrides)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class EmulatorConfig:
    """Everything that changes how the emulator behaves.

    ``api_keys`` None means any key of the ``sk-`` form with a non-empty rest is valid, like a
    user's real key would be. ``clock`` is injectable so tests can expire ephemeral keys and
    sessions without sleeping.
    """

    behaviour: str = "tone"
    speed: float = 4.0  # WS output audio generation vs real time (PROTOCOL.md: faster than real time)
    think_ms: int = 300
    reply_seconds: float = 2.0
    chunk_ms: int = 80  # size of each generated audio chunk (response.output_audio.delta)
    api_keys: frozenset[str] | None = None
    ek_ttl_default: int = 600  # PROTOCOL.md 1.1: expires_after.seconds default 600, 10..7200
    ek_ttl_min: int = 10
    ek_ttl_max: int = 7200
    session_max_seconds: float = 3600.0  # PROTOCOL.md 6: 60-minute cap
    log_path: str | None = None
    loopback_ice: bool = True  # keep ICE candidates on 127.0.0.1 (read by webrtc.py)
    ping_interval: float = 20.0  # PROTOCOL.md 3: server PING every ~20 s
    default_model: str = "gpt-realtime"
    clock: Callable[[], float] = field(default=time.time, compare=False)

    def is_valid_api_key(self, key: str) -> bool:
        """A standard (non-ephemeral) API key the emulator accepts."""
        if self.api_keys is not None:
            return key in self.api_keys
        return key.startswith("sk-") and len(key) > 3
