"""Settings from flags, the environment and ``.env`` (python-dotenv), in that order of precedence.

Nothing here does network or audio I/O. ``.env.example`` documents every variable.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from dotenv import load_dotenv

from bridge.errors import ConfigError

DEFAULT_API_BASE = "https://api.openai.com/v1"
DEFAULT_MODEL = "gpt-realtime"
DEFAULT_VOICE = "marin"
EMULATOR_HOST = "127.0.0.1"
EMULATOR_PORT = 8765


def load_env(path: str | os.PathLike[str] | None = None) -> None:
    """Load ``.env`` (from ``path`` or the working directory) without overriding the environment."""
    load_dotenv(dotenv_path=path or Path.cwd() / ".env", override=False)


def env(name: str, default: str | None = None) -> str | None:
    """An environment variable, with empty strings treated as unset."""
    value = os.environ.get(name, "").strip()
    return value or default


def normalize_api_base(url: str) -> str:
    """Check an ``OPENAI_BASE_URL``-style URL (``http(s)://host[:port]/v1``) and strip the trailing slash."""
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ConfigError(f"API base must look like https://api.openai.com/v1, got {url!r}")
    return url.rstrip("/")


def read_text_arg(value: str | None) -> str | None:
    """``TEXT`` or ``@FILE`` (the file's contents)."""
    if value is None or not value.startswith("@"):
        return value
    path = Path(value[1:])
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc


@dataclass(frozen=True)
class Credentials:
    """Where keys come from. ``api_key`` is never printed (see ``__repr__``)."""

    api_key: str | None
    api_base: str
    token_url: str | None = None
    token_secret: str | None = None

    def __repr__(self) -> str:
        key = "set" if self.api_key else "none"
        secret = "set" if self.token_secret else "none"
        return (
            f"Credentials(api_key={key}, api_base={self.api_base!r}, "
            f"token_url={self.token_url!r}, token_secret={secret})"
        )

    @property
    def offline(self) -> bool:
        """True when there is neither a key nor a token server: use the built-in emulator."""
        return not self.api_key and not self.token_url


def credentials(
    api_base: str | None = None, token_url: str | None = None, token_secret: str | None = None
) -> Credentials:
    """Build credentials from flags first, then the environment / ``.env``."""
    base = api_base or env("OPENAI_BASE_URL", DEFAULT_API_BASE)
    assert base is not None
    return Credentials(
        api_key=env("OPENAI_API_KEY"),
        api_base=normalize_api_base(base),
        token_url=token_url or env("BRIDGE_TOKEN_URL"),
        token_secret=token_secret or env("BRIDGE_TOKEN_SECRET"),
    )


FastRtp = Literal["on", "off", "loop"]
"""``BRIDGE_FAST_RTP``: ``on`` (default; ``1``): bridge's short RTP paths, the uplink sent from the
microphone's capture thread when it has one; ``loop``: short paths, uplink always sent from the event loop
(for A/B measurements); ``off`` (``0``): aiortc's own RTP loops."""
PlayoutMode = Literal["neteq", "neteq-fec", "steps"]
"""``BRIDGE_PLAYOUT``: the WebRTC playout margin. ``neteq`` (default): follows the measured arrival jitter and
conceals a late frame when the speaker needs it; ``neteq-fec``: also waits a frame for the next packet's FEC;
``steps``: the older 5 ms margin raised by underruns (A/B switches, docs/benchmarks.md)."""
AecMode = Literal["on", "off", "auto"]
"""``--aec`` / ``BRIDGE_AEC``: echo cancellation ``auto`` (default: on when input and output are sound cards),
``on`` (an error where it cannot run) or ``off``."""
NoiseReduction = Literal["near_field", "far_field", "off"]
"""``--noise-reduction``: the session's ``audio.input.noise_reduction`` (``off``: null)."""
DEFAULT_INSTRUCTIONS = "You are a helpful, concise voice assistant. Keep answers short and natural."


DEFAULT_RECONNECT_FOR_S = 300.0


def seconds_setting(what: str, value: str | None, default: float = DEFAULT_RECONNECT_FOR_S) -> float:
    """A number of seconds >= 0, or ``inf``."""
    if value is None or not str(value).strip():
        return default
    try:
        seconds = float(value)
    except ValueError:
        raise ConfigError(f"{what} takes seconds (a number >= 0, or inf), got {value!r}") from None
    if math.isnan(seconds) or seconds < 0:
        raise ConfigError(f"{what} takes seconds (a number >= 0, or inf), got {value!r}")
    return seconds


def positive(what: str, value: int | None, default: int) -> int:
    if value is None:
        return default
    if value < 1:
        raise ConfigError(f"{what} takes a whole number >= 1, got {value}")
    return value


def playout_setting(value: str | None) -> PlayoutMode:
    modes: dict[str, PlayoutMode] = {"neteq": "neteq", "neteq-fec": "neteq-fec", "steps": "steps"}
    mode = modes.get((value or "neteq").strip().casefold())
    if mode is not None:
        return mode
    raise ConfigError(f"BRIDGE_PLAYOUT takes neteq, neteq-fec or steps (got {value!r})")


def aec_setting(value: str | None) -> AecMode:
    """``--aec`` or ``BRIDGE_AEC`` (also 1/0)."""
    text = (value or "auto").strip().casefold()
    if text in ("on", "1", "true", "yes"):
        return "on"
    if text in ("off", "0", "false", "no"):
        return "off"
    if text == "auto":
        return "auto"
    raise ConfigError(f"--aec / BRIDGE_AEC takes on, off or auto (got {value!r})")


def fast_rtp_setting(value: str | None) -> FastRtp:
    text = (value or "1").strip().casefold()
    if text in ("1", "on", "true", "yes"):
        return "on"
    if text in ("0", "off", "false", "no"):
        return "off"
    if text == "loop":
        return "loop"
    raise ConfigError(f"BRIDGE_FAST_RTP takes 1, 0 or loop (got {value!r})")


@dataclass(frozen=True)
class RunConfig:
    """Everything ``bridge run`` is told, from flags, then the environment, then ``.env`` (built here once)."""

    credentials: Credentials
    transport: Literal["webrtc", "ws"] = "webrtc"
    input: str | None = None
    output: str | None = None
    transcript: Path | None = None
    duration: float | None = None
    model: str = DEFAULT_MODEL
    voice: str = DEFAULT_VOICE
    instructions: str = DEFAULT_INSTRUCTIONS
    offline: bool = False
    agents: Path | None = None
    ptt: bool = False
    bargein: Literal["exact", "naive"] = "exact"
    fast_rtp: FastRtp = "on"
    playout: PlayoutMode = "neteq"
    opus_fec: bool = True
    """``BRIDGE_OPUS_FEC=0``: the WebRTC offer does not declare in-band FEC (the server then sends none)."""
    reconnect_for: float = DEFAULT_RECONNECT_FOR_S
    replay: Literal["summary", "items"] = "summary"
    replay_turns: int = 40
    replay_chars: int = 8000
    kiosk: KioskConfig | None = None
    """``--kiosk``: always on, a call per visitor."""
    aec: AecMode = "auto"
    noise_reduction: NoiseReduction | None = None
    """None: far-field when echo cancellation runs (open speakers), else the API's default (none)."""

    def noise_reduction_for(self, cancels_echo: bool) -> NoiseReduction | None:
        """What the session asks for: ``--noise-reduction``, else far-field for open speakers."""
        if self.noise_reduction is not None:
            return self.noise_reduction
        return "far_field" if cancels_echo else None

    def session(self, cancels_echo: bool) -> dict[str, Any]:
        """The Realtime session config (``cancels_echo``: the station runs echo cancellation: open speakers)."""
        from bridge.protocol.session_config import realtime_session

        return realtime_session(
            self.model,
            self.voice,
            self.instructions,
            vad=not self.ptt,  # push-to-talk: turn_detection null, the key ends the turn (bridge.app.ptt)
            noise_reduction=self.noise_reduction_for(cancels_echo),
        )

    @classmethod
    def from_args(cls, args: Any) -> RunConfig:
        """From ``bridge run``'s parsed flags (an ``argparse.Namespace``) and the environment."""
        return cls(
            credentials=credentials(args.api_base, args.token_url, args.token_secret),
            transport=args.transport,
            input=args.input,
            output=args.output,
            transcript=Path(args.transcript) if args.transcript else None,
            duration=args.duration,
            model=args.model or DEFAULT_MODEL,
            voice=args.voice or DEFAULT_VOICE,
            instructions=read_text_arg(args.instructions) or DEFAULT_INSTRUCTIONS,
            offline=bool(args.offline),
            agents=Path(args.agents) if args.agents else None,
            ptt=bool(args.ptt),
            bargein=args.bargein,
            fast_rtp=fast_rtp_setting(env("BRIDGE_FAST_RTP")),
            playout=playout_setting(env("BRIDGE_PLAYOUT")),
            opus_fec=(env("BRIDGE_OPUS_FEC", "1") or "1").strip() != "0",
            reconnect_for=seconds_setting("--reconnect-for", args.reconnect_for or env("BRIDGE_RECONNECT_FOR")),
            replay=args.replay or "summary",
            replay_turns=positive("--replay-turns", args.replay_turns, 40),
            replay_chars=positive("--replay-chars", args.replay_chars, 8000),
            kiosk=KioskConfig.from_args(args) if args.kiosk else None,
            aec=aec_setting(args.aec or env("BRIDGE_AEC")),
            noise_reduction=args.noise_reduction,
        )


@dataclass(frozen=True)
class KioskConfig:
    """``bridge run --kiosk``: always on, a call per visitor (docs/kiosk.md). Built once from flags and env."""

    health_port: int | None = None
    health_host: str = "127.0.0.1"
    wake_word: str | None = None
    transcript_dir: Path = Path("transcripts")
    keep_days: float | None = 30.0
    hangup_after_s: float = 30.0
    max_call_s: float = 900.0
    max_call_minutes_per_hour: float | None = None
    vad_engine: str = "auto"
    goodbye: str | None = None
    """Instructions for a short spoken goodbye before an idle hang-up (None: hang up silently)."""

    @classmethod
    def from_args(cls, args: Any) -> KioskConfig:
        port = args.health_port if args.health_port is not None else env("BRIDGE_HEALTH_PORT")
        per_hour = args.max_call_minutes_per_hour
        return cls(
            health_port=int(port) if port is not None else None,
            health_host=args.health_host or env("BRIDGE_HEALTH_HOST", "127.0.0.1") or "127.0.0.1",
            wake_word=args.wake_word or env("BRIDGE_WAKE_WORD"),
            transcript_dir=Path(args.transcript_dir or env("BRIDGE_TRANSCRIPT_DIR", "transcripts") or "transcripts"),
            keep_days=_optional_days(args.keep_days if args.keep_days is not None else env("BRIDGE_KEEP_DAYS")),
            hangup_after_s=seconds_setting("--hangup-after", args.hangup_after, 30.0),
            max_call_s=seconds_setting("--max-call", args.max_call, 900.0),
            max_call_minutes_per_hour=float(per_hour) if per_hour is not None else None,
            vad_engine=env("BRIDGE_VAD", "auto") or "auto",
            goodbye=args.goodbye,
        )


def _optional_days(value: str | float | None) -> float | None:
    """``--keep-days``: a number of days, or ``0``/``forever`` to keep every transcript."""
    if value is None or str(value).strip() == "":
        return 30.0
    if str(value).strip().casefold() in ("0", "forever", "none"):
        return None
    try:
        days = float(value)
    except ValueError:
        raise ConfigError(f"--keep-days takes a number of days (or forever), got {value!r}") from None
    if days <= 0 or math.isnan(days):
        raise ConfigError(f"--keep-days takes a number of days (or forever), got {value!r}")
    return days
