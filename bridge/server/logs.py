"""``bridge serve``'s log: one line per request (``bridge.server.access``), plain text or JSON
(``-v json`` or ``BRIDGE_LOG_FORMAT=json``), and never a key: every record passes :class:`Redact`.

A JSON line: ``{"ts", "level", "logger", "msg"}`` plus, for requests, ``method path status ms client
reason kiosk replica`` (``reason`` is the error code of a refusal, e.g. ``rate_limited``).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from bridge.server.mint import redact

ACCESS = "bridge.server.access"
_FIELDS = ("method", "path", "status", "ms", "client", "reason", "kiosk", "call_id", "replica")


class Redact(logging.Filter):
    """Replace the configured secrets and anything key-shaped in every record's final message."""

    def __init__(self, *secrets: str | None) -> None:
        super().__init__()
        self._secrets = tuple(s for s in secrets if s)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message, *self._secrets)
        if clean != message or record.args:
            record.msg, record.args = clean, None
        if record.exc_info and record.exc_text is None and record.exc_info[1] is not None:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info), *self._secrets)
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        http = getattr(record, "http", None)
        if isinstance(http, dict):
            line.update({k: v for k, v in http.items() if v is not None})
        if record.exc_text:  # already redacted by Redact
            line["error"] = record.exc_text
        elif record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, separators=(",", ":"))


def configure(json_lines: bool, *secrets: str | None) -> None:
    """Install the redaction filter (and the JSON formatter) on every root handler; requests log at INFO."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig()
    for handler in root.handlers:
        handler.addFilter(Redact(*secrets))
        if json_lines:
            handler.setFormatter(JsonFormatter())
    # The request lines are the server's own log: shown at the default verbosity too (a propagated record
    # is only checked against the handlers' levels, which basicConfig leaves open).
    logging.getLogger(ACCESS).setLevel(logging.INFO)


def log_request(fields: dict[str, Any]) -> None:
    """One line for one request; ``fields`` as in the module doc."""
    http = {k: fields.get(k) for k in _FIELDS}
    http["ms"] = round(float(http["ms"] or 0.0), 1)
    text = " ".join(
        [f"{http['method']} {http['path']} {http['status']} {http['ms']:.1f} ms client={http['client']}"]
        + [f"{k}={http[k]}" for k in ("reason", "kiosk", "call_id") if http.get(k)]
    )
    logging.getLogger(ACCESS).info("%s", text, extra={"http": http})
