"""API keys and ephemeral client secrets (PROTOCOL.md 1.1, 3, 6).

Expiry only stops a secret creating NEW sessions; a secret may create several sessions.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from bridge.emulator.config import EmulatorConfig
from bridge.protocol import ids

_KEYS_URL = "https://platform.openai.com/account/api-keys"


def mask_key(key: str) -> str:
    """The way the real service echoes a bad key: a prefix, stars, the last 4 characters."""
    if len(key) <= 8:
        return "*" * len(key)
    return key[:3] + "*" * (len(key) - 7) + key[-4:]


def bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def invalid_key_error(key: str | None) -> dict[str, Any]:
    """The ``error`` body for a bad or missing key (REST 401 and the WS error event)."""
    if key is None:
        message = "You didn't provide an API key. You need to provide your API key in an Authorization header."
    else:
        message = f"Incorrect API key provided: {mask_key(key)}. You can find your API key at {_KEYS_URL}."
    return {"message": message, "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}


@dataclass
class ClientSecret:
    value: str
    expires_at: int
    session: dict[str, Any]  # the session request the secret was minted with (merged on defaults)


class KeyStore:
    """Valid API keys (from config) plus the ephemeral keys this emulator minted. No I/O."""

    def __init__(self, config: EmulatorConfig) -> None:
        self._config = config
        self._secrets: dict[str, ClientSecret] = {}

    def mint(self, ttl_seconds: int, session: dict[str, Any]) -> ClientSecret:
        self._prune()
        secret = ClientSecret(ids.ephemeral_key(), int(self._config.clock()) + ttl_seconds, copy.deepcopy(session))
        self._secrets[secret.value] = secret
        return secret

    def is_api_key(self, key: str | None) -> bool:
        return key is not None and not key.startswith("ek_") and self._config.is_valid_api_key(key)

    def secret(self, key: str | None) -> ClientSecret | None:
        """The unexpired client secret for ``key``, else None (expired ones count as invalid)."""
        if key is None:
            return None
        found = self._secrets.get(key)
        if found is None or self._config.clock() >= found.expires_at:
            return None
        return found

    def forget_all(self) -> None:
        """A restarted service knows none of the keys it minted before."""
        self._secrets.clear()

    @property
    def minted(self) -> int:
        return len(self._secrets)

    def _prune(self) -> None:
        now = self._config.clock()
        for value in [v for v, s in self._secrets.items() if now >= s.expires_at + 3600]:
            del self._secrets[value]
