"""``bridge serve``: a token server that mints ephemeral Realtime keys, plus the browser page in ``web/``.

The API key lives only here; browsers (and kiosks running ``bridge run --token-url``) get a short-lived
``ek_…`` key and talk WebRTC straight to the Realtime API (PROTOCOL.md 1.1, 2.1).
"""

from bridge.server.app import make_app
from bridge.server.settings import ServerSettings

__all__ = ["ServerSettings", "make_app"]
