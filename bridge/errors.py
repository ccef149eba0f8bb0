"""Every error the bridge raises on purpose.

    BridgeError                      one clear line for the user; the CLI prints it and exits 1
     +-- ConfigError                 bad flag, env or .env value (missing file, bad URL, ...)
     +-- AuthError                   the server rejected a key (HTTP 401, WS close 3000)
     +-- ConnectError                server unreachable, SDP exchange or ICE/data channel failed
     |    +-- ServiceError           the service is there but busy or failing (HTTP 5xx, 429): try again
     +-- ProtocolError               the server sent something we cannot act on, or refused the request
     |    +-- QuotaError             the account is out of quota (``insufficient_quota``)
     +-- AudioError                  no such device, PortAudio missing, stream failed

Retrying makes sense for ``ConnectError`` (and its ``ServiceError``) only: a rejected key, a refused
request and an empty account stay so (``bridge.call.supervisor``).

Errors from aiohttp, aiortc and PortAudio are mapped to these at the boundary
(``raise AudioError(...) from exc``). Messages never contain an API key.
"""

from __future__ import annotations


class BridgeError(Exception):
    """Base class: ``str(err)`` is a one-line message fit for the user."""


class ConfigError(BridgeError):
    pass


class AuthError(BridgeError):
    pass


class ConnectError(BridgeError):
    pass


class ServiceError(ConnectError):
    pass


class ProtocolError(BridgeError):
    pass


class QuotaError(ProtocolError):
    pass


class AudioError(BridgeError):
    pass
