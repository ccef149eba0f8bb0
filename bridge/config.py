"""Settings from flags, the environment and ``.env`` (python-dotenv), in that order of precedence.

Nothing here does network or audio I/O. ``.env.example`` documents every variable.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
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
