"""Emulator settings: one frozen dataclass built from CLI flags (or test overrides)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from bridge.emulator.faults import Fault


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
    ping_interval: float = 20.26  # PROTOCOL.md 3: server PING every ~20.26 s
    default_model: str = "gpt-realtime"
    # faults (docs/emulator.md "Faults"; bridge.emulator.faults)
    session_faults: tuple[Fault, ...] = ()  # armed for every new session, after_s from its start
    refuse_for_s: float = 0.0  # refuse new keys/calls/sessions for this long after start-up
    refuse_status: int = 500  # ... with HTTP 500 or 429
    random_drop_mean_s: float | None = None  # drop each session after an exponential time of this mean
    fault_seed: int | None = None  # seeds random drops (None: a fresh seed)
    text_only_after_assistant_text: bool = False  # the opt-in trap (faults.py, docs/emulator.md)
    quote_context: bool = False  # replies quote the earlier user turn (behaviours/quote.py)
    admin: bool = True  # the loopback-only admin API under /_emulator
    admin_allow: tuple[str, ...] = ()  # further client addresses it answers (the lab's other namespaces)
    clock: Callable[[], float] = field(default=time.time, compare=False)

    def is_valid_api_key(self, key: str) -> bool:
        """A standard (non-ephemeral) API key the emulator accepts."""
        if self.api_keys is not None:
            return key in self.api_keys
        return key.startswith("sk-") and len(key) > 3
