"""Frozen settings for the token server: flags + environment (+ ``.env``) -> one :class:`ServerSettings`.

This is the only module of ``bridge.server`` that reads environment variables (:func:`from_args`,
:func:`upstream`, :func:`token_admin_settings`, :func:`find_web_root`). Nothing here does network I/O.
``repr()`` never shows the API key, the access token or the Redis URL (it may carry a password).
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from bridge.config import DEFAULT_MODEL, DEFAULT_VOICE, Credentials, credentials, env, read_text_arg
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
DEFAULT_CALL_TTL = 15.0
_PREFIX = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def default_replica_id() -> str:
    """``<host>-<pid>-<4 hex>``: unique per process, readable in logs and in Redis."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"


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
    # Per-credential mint limit (the shared access token and each kiosk token): a token bucket like the
    # per-client one. Anonymous requests (no access token configured) only have the per-client bucket.
    token_burst: int = 60
    token_period: float = 1.0
    # Anonymous requests are refused even without --access-token (a fleet of per-kiosk tokens only).
    require_token: bool = False
    # ---- the fleet (docs/web.md "Running a fleet") ----
    # None: limits, calls and usage live in this process (one machine). Else all shared state is in Redis.
    redis_url: str | None = field(default=None, repr=False)
    redis_prefix: str = "bridge"
    replica_id: str = field(default_factory=default_replica_id)
    # An agent call's owner refreshes its lock every call_ttl/3; once it lapses (the owner died) another
    # replica takes the call over. Other replicas look for orphans every call_ttl/6.
    call_ttl: float = DEFAULT_CALL_TTL
    # On SIGTERM: how long to wait for other replicas to take our calls before leaving anyway.
    handover_wait: float = 5.0
    # Fleet-wide call minutes per UTC day for agent calls (0 = no cap); per kiosk it is set per token.
    fleet_minutes_per_day: float = 0.0
    log_json: bool = False

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
        if self.token_burst < 1 or self.token_period <= 0:
            raise ConfigError("the per-token mint limit needs a burst >= 1 and a period > 0")
        if self.redis_url is not None:
            check_redis_url(self.redis_url)
        if not _PREFIX.match(self.redis_prefix):
            raise ConfigError(f"BRIDGE_REDIS_PREFIX must be 1-64 of [A-Za-z0-9_.-], got {self.redis_prefix!r}")
        if not 1.0 <= self.call_ttl <= 600.0:
            raise ConfigError(f"--call-ttl must be 1..600 seconds, got {self.call_ttl}")
        if self.handover_wait < 0 or self.fleet_minutes_per_day < 0:
            raise ConfigError("--handover-wait and --fleet-minutes-per-day must be >= 0")

    @property
    def fleet(self) -> bool:
        """True when shared state lives in Redis (``--redis-url``)."""
        return self.redis_url is not None

    @property
    def tokens_required(self) -> bool:
        """Anonymous requests are refused (a shared access token is set, or ``--require-token``)."""
        return self.access_token is not None or self.require_token

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


def check_redis_url(url: str) -> str:
    """``redis://``, ``rediss://`` (TLS) or ``unix://``; one clear line otherwise (never echoing a password)."""
    parsed = urlparse(url)
    if parsed.scheme not in ("redis", "rediss", "unix") or not (parsed.netloc or parsed.path):
        raise ConfigError("--redis-url must look like redis://[:password@]host:port/db, rediss://… or unix:///path")
    return url


def upstream(args: argparse.Namespace) -> Credentials:
    """The API base and key from ``--api-base`` / ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY``."""
    return credentials(api_base=args.api_base)


def from_args(args: argparse.Namespace, api_key: str, api_base: str, offline: bool) -> ServerSettings:
    """Flags first, then the environment (``BRIDGE_*``, ``.env`` already loaded), then defaults."""
    origins = []
    for origin in args.allow_origin or []:
        normalized = normalize_origin(origin)
        if normalized is None:
            raise ConfigError(f"--allow-origin must look like https://host[:port], got {origin!r}")
        origins.append(normalized)
    language = getattr(args, "language", None) or env("BRIDGE_TRANSCRIBE_LANGUAGE")
    agents = _load_agents(getattr(args, "agents", None) or env("BRIDGE_AGENTS"))

    def flag(name: str) -> Any:
        return getattr(args, name, None)  # tests pass partial namespaces

    return ServerSettings(
        api_key=api_key,
        api_base=api_base,
        model=args.model or env("BRIDGE_MODEL", DEFAULT_MODEL) or DEFAULT_MODEL,
        voice=args.voice or env("BRIDGE_VOICE", DEFAULT_VOICE) or DEFAULT_VOICE,
        instructions=read_text_arg(args.instructions or env("BRIDGE_INSTRUCTIONS")),
        key_ttl=args.key_ttl,
        transcription_language=language,
        greeting=flag("greeting") or env("BRIDGE_GREETING"),
        access_token=args.access_token or env("BRIDGE_ACCESS_TOKEN"),
        allowed_origins=tuple(origins),
        rate_burst=_whole(flag("rate_burst"), "BRIDGE_RATE_BURST", 5),
        rate_period=_number(flag("rate_period"), "BRIDGE_RATE_PERIOD", 6.0),
        token_burst=_whole(flag("token_burst"), "BRIDGE_TOKEN_BURST", 60),
        token_period=_number(flag("token_period"), "BRIDGE_TOKEN_PERIOD", 1.0),
        require_token=bool(flag("require_token")) or _truthy("BRIDGE_REQUIRE_TOKEN"),
        trust_forwarded=_truthy("BRIDGE_TRUST_FORWARDED"),
        offline=offline,
        relay_calls=_relay_calls(offline),
        agents=agents,
        transcripts_dir=Path(flag("transcripts_dir") or env("BRIDGE_TRANSCRIPTS_DIR") or DEFAULT_TRANSCRIPTS_DIR),
        max_calls=_whole(flag("max_calls"), "BRIDGE_MAX_CALLS", 8),
        web_root=find_web_root(flag("web_root")),
        redis_url=flag("redis_url") or env("BRIDGE_REDIS_URL"),
        redis_prefix=env("BRIDGE_REDIS_PREFIX", "bridge") or "bridge",
        replica_id=flag("replica_id") or env("BRIDGE_REPLICA_ID") or default_replica_id(),
        call_ttl=_number(flag("call_ttl"), "BRIDGE_CALL_TTL", DEFAULT_CALL_TTL),
        handover_wait=_number(flag("handover_wait"), "BRIDGE_HANDOVER_WAIT", 5.0),
        fleet_minutes_per_day=_number(flag("fleet_minutes_per_day"), "BRIDGE_FLEET_MINUTES_PER_DAY", 0.0),
        log_json=flag("log_format") == "json" or (flag("log_format") is None and log_json_from_env()),
    )


@dataclass(frozen=True)
class TokenAdminSettings:
    """``bridge serve tokens ...``: where the kiosk credentials live."""

    redis_url: str = field(repr=False)
    redis_prefix: str = "bridge"


def token_admin_settings(args: argparse.Namespace) -> TokenAdminSettings:
    url = getattr(args, "redis_url", None) or env("BRIDGE_REDIS_URL")
    if not url:
        raise ConfigError("kiosk tokens live in Redis: give --redis-url redis://host:port or BRIDGE_REDIS_URL")
    prefix = env("BRIDGE_REDIS_PREFIX", "bridge") or "bridge"
    if not _PREFIX.match(prefix):
        raise ConfigError(f"BRIDGE_REDIS_PREFIX must be 1-64 of [A-Za-z0-9_.-], got {prefix!r}")
    return TokenAdminSettings(check_redis_url(url), prefix)


def log_json_from_env() -> bool:
    return (env("BRIDGE_LOG_FORMAT") or "").lower() == "json"


def _load_agents(path: str | None) -> AgentSet | None:
    """The agents file, validated at start-up: a bad file is one ConfigError (exit 1) listing every problem."""
    if not path:
        return None
    from bridge.agents import load_agents

    return load_agents(path)


def _truthy(name: str) -> bool:
    return (env(name, "0") or "0").lower() in ("1", "true", "yes")


def _number(flag: float | None, name: str, default: float) -> float:
    if flag is not None:
        return float(flag)
    raw = env(name)
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from exc


def _whole(flag: int | None, name: str, default: int) -> int:
    if flag is not None:
        return int(flag)
    raw = env(name)
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from exc


def _relay_calls(offline: bool) -> bool:
    """``BRIDGE_CALLS=relay|direct``; by default the in-process emulator is reached through the relay."""
    mode = (env("BRIDGE_CALLS") or ("relay" if offline else "direct")).lower()
    if mode not in ("relay", "direct"):
        raise ConfigError(f"BRIDGE_CALLS must be relay or direct, got {mode!r}")
    return mode == "relay"
