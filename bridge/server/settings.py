"""Frozen settings for the token server, built by ``bridge.server.cli`` from flags and the environment.

Nothing here does I/O. ``repr()`` never shows the API key or the access token.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from bridge.config import DEFAULT_MODEL, DEFAULT_VOICE
from bridge.errors import ConfigError

# PROTOCOL.md 1.1: expires_after.seconds is 10..7200.
MIN_KEY_TTL = 10
MAX_KEY_TTL = 7200

DEFAULT_WEB_ROOT = Path(__file__).resolve().parents[2] / "web"


def default_turn_detection() -> dict[str, Any]:
    """Server VAD with the session defaults observed in PROTOCOL.md 4.7, but a calmer 500 ms end of turn."""
    return {
        "type": "server_vad",
        "threshold": 0.5,
        "prefix_padding_ms": 300,
        "silence_duration_ms": 500,
        "create_response": True,
        "interrupt_response": True,
    }


@dataclass(frozen=True)
class ServerSettings:
    """Everything ``make_app`` needs. ``api_key`` and ``access_token`` are secrets (hidden from repr)."""

    api_key: str = field(repr=False)
    api_base: str
    model: str = DEFAULT_MODEL
    voice: str = DEFAULT_VOICE
    instructions: str | None = None
    key_ttl: int = 60
    transcription_model: str = "gpt-4o-mini-transcribe"
    transcription_language: str | None = None
    turn_detection: dict[str, Any] | None = field(default_factory=default_turn_detection)
    greeting: str | None = None
    access_token: str | None = field(default=None, repr=False)
    allowed_origins: tuple[str, ...] = ()
    # Token bucket per client address: `rate_burst` mints at once, then one every `rate_period` seconds.
    rate_burst: int = 5
    rate_period: float = 6.0
    rate_max_clients: int = 10_000
    trust_forwarded: bool = False
    max_body_bytes: int = 4096
    upstream_timeout: float = 10.0
    web_root: Path = DEFAULT_WEB_ROOT
    offline: bool = False
    # True: the page sends its SDP offer to our /api/calls relay instead of straight to the API.
    relay_calls: bool = False

    def __post_init__(self) -> None:
        if not MIN_KEY_TTL <= self.key_ttl <= MAX_KEY_TTL:
            raise ConfigError(f"--key-ttl must be {MIN_KEY_TTL}..{MAX_KEY_TTL} seconds, got {self.key_ttl}")
        if self.rate_burst < 1 or self.rate_period <= 0:
            raise ConfigError("rate limit needs a burst >= 1 and a period > 0")
        for origin in self.allowed_origins:
            if normalize_origin(origin) != origin:
                raise ConfigError(f"--allow-origin must look like https://host[:port], got {origin!r}")

    @property
    def upstream_calls_url(self) -> str:
        """The Realtime API's SDP endpoint (PROTOCOL.md 2.1)."""
        return f"{self.api_base}/realtime/calls"

    @property
    def api_origin(self) -> str:
        """The API base's origin, for the page's CSP ``connect-src``."""
        parsed = urlparse(self.api_base)
        return f"{parsed.scheme}://{parsed.netloc}"

    def session_config(self) -> dict[str, Any]:
        """The GA session sent upstream with every mint (RealtimeSessionCreateRequestGA, PROTOCOL.md 1.1)."""
        transcription: dict[str, Any] = {"model": self.transcription_model}
        if self.transcription_language:
            transcription["language"] = self.transcription_language
        session: dict[str, Any] = {
            "type": "realtime",
            "model": self.model,
            "audio": {
                "input": {"transcription": transcription, "turn_detection": self.turn_detection},
                "output": {"voice": self.voice},
            },
        }
        if self.instructions:
            session["instructions"] = self.instructions
        return session


def normalize_origin(origin: str) -> str | None:
    """``scheme://host[:port]`` in lower case, or None when ``origin`` is not an http(s) origin."""
    parsed = urlparse(origin.strip())
    if parsed.scheme not in ("http", "https") or not parsed.netloc or parsed.path not in ("", "/"):
        return None
    if parsed.query or parsed.fragment or parsed.username or parsed.password:
        return None
    return f"{parsed.scheme}://{parsed.netloc}".lower()
