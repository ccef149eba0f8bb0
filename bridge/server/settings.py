"""Frozen settings for the token server, built by ``bridge.server.cli`` from flags and the environment.

Nothing here does I/O. ``repr()`` never shows the API key or the access token.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from bridge.config import DEFAULT_MODEL, DEFAULT_VOICE
from bridge.errors import ConfigError
from bridge.protocol.session_config import default_turn_detection, realtime_session

if TYPE_CHECKING:
    from bridge.agents.config import AgentSet

# PROTOCOL.md 1.1: expires_after.seconds is 10..7200.
MIN_KEY_TTL = 10
MAX_KEY_TTL = 7200

# The page lives in the repository's top-level web/ (plain files, no build step). An editable install
# finds it next to the package; anything else must point at it (see find_web_root).
DEFAULT_WEB_ROOT = Path(__file__).resolve().parents[2] / "web"
DEFAULT_TRANSCRIPTS_DIR = Path("transcripts") / "serve"


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
    # Server-side agents (``--agents``): browser calls go through POST /api/call and the sideband.
    agents: AgentSet | None = None
    transcripts_dir: Path = DEFAULT_TRANSCRIPTS_DIR
    max_calls: int = 8  # concurrent sideband sessions (each holds a WebSocket and runs tools here)
    max_offer_bytes: int = 64 * 1024  # a browser offer is ~3-6 KB

    def __post_init__(self) -> None:
        if not MIN_KEY_TTL <= self.key_ttl <= MAX_KEY_TTL:
            raise ConfigError(f"--key-ttl must be {MIN_KEY_TTL}..{MAX_KEY_TTL} seconds, got {self.key_ttl}")
        if self.rate_burst < 1 or self.rate_period <= 0:
            raise ConfigError("rate limit needs a burst >= 1 and a period > 0")
        if self.max_calls < 1:
            raise ConfigError(f"the concurrent call limit must be >= 1, got {self.max_calls}")
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
        return realtime_session(
            self.model,
            self.voice,
            self.instructions,
            transcription_model=self.transcription_model,
            language=self.transcription_language,
            turn_detection=self.turn_detection,
            vad=self.turn_detection is not None,
        )

    def call_session_config(self) -> dict[str, Any]:
        """The session for a server-created call: the base config set up for the agents' start agent.

        Only with ``agents``; the start agent's instructions, tools, voice and transcription language win
        over ``--instructions``/``--voice``/``--language`` (docs/agents.md "Voice").
        """
        if self.agents is None:
            raise ConfigError("no agents file: browser calls are not created on this server")
        return self.agents.session_config(self.session_config())


def find_web_root(explicit: str | Path | None = None) -> Path:
    """The directory holding the page (``index.html``), checked at start-up.

    Order: ``explicit`` (``--web-root``), ``BRIDGE_WEB_ROOT``, the repository's ``web/`` next to the package
    (a source checkout or an editable install), ``<prefix>/share/bridge/web``. A wheel cannot carry
    ``web/`` inside the package without moving it, so a non-editable install must name it; the error
    says how.
    """
    env = os.environ.get("BRIDGE_WEB_ROOT") or None
    for given, source in ((explicit, "--web-root"), (env, "BRIDGE_WEB_ROOT")):
        if given:
            root = Path(given).expanduser()
            if not (root / "index.html").is_file():
                raise ConfigError(f"{source} {root}: no index.html there")
            return root.resolve()
    for root in (DEFAULT_WEB_ROOT, Path(sys.prefix) / "share" / "bridge" / "web"):
        if (root / "index.html").is_file():
            return root.resolve()
    raise ConfigError(
        "cannot find the page (web/index.html): this install has no web/ next to the package. "
        "Point at a checkout's web/ directory with --web-root DIR or BRIDGE_WEB_ROOT=DIR"
    )


def normalize_origin(origin: str) -> str | None:
    """``scheme://host[:port]`` in lower case, or None when ``origin`` is not an http(s) origin."""
    parsed = urlparse(origin.strip())
    if parsed.scheme not in ("http", "https") or not parsed.netloc or parsed.path not in ("", "/"):
        return None
    if parsed.query or parsed.fragment or parsed.username or parsed.password:
        return None
    return f"{parsed.scheme}://{parsed.netloc}".lower()
