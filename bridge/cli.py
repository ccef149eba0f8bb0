"""The ``bridge`` command: argparse subcommands, thin; each one's logic lives in its own module.

A subcommand's implementation is ``main(args) -> int`` in the module named in ``COMMANDS``.
Errors derived from :class:`bridge.errors.BridgeError` print as one line and exit 1.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import Any

from bridge import __version__
from bridge.config import DEFAULT_MODEL, DEFAULT_VOICE, EMULATOR_HOST, EMULATOR_PORT, load_env
from bridge.errors import BridgeError

COMMANDS = {
    "run": ("bridge.app.run", "issue #3"),
    "devices": ("bridge.app.devices", "issue #3"),
    "emulate": ("bridge.emulator.cli", "issue #2"),
    "serve": ("bridge.server.cli", "issue #5"),
    "bench": ("bridge.bench.cli", "issue #6"),
}


def _add_run(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("run", help="talk to the model through the local microphone and speaker")
    p.add_argument("--transport", choices=["webrtc", "ws"], default="webrtc")
    p.add_argument("--input", default=None, metavar="DEV", help="device index, name substring, FILE.wav or null")
    p.add_argument("--output", default=None, metavar="DEV", help="device index, name substring, FILE.wav or null")
    p.add_argument("--transcript", default=None, metavar="PATH", help="JSONL transcript (default transcripts/)")
    p.add_argument("--duration", type=float, default=None, metavar="SECONDS", help="end cleanly after this long")
    p.add_argument("--model", default=None, help=f"model (default {DEFAULT_MODEL})")
    p.add_argument("--voice", default=None, help=f"voice (default {DEFAULT_VOICE})")
    p.add_argument("--instructions", default=None, metavar="TEXT|@FILE")
    p.add_argument("--api-base", default=None, metavar="URL", help="like OPENAI_BASE_URL")
    p.add_argument("--token-url", default=None, metavar="URL", help="mint ephemeral keys at this token server")
    p.add_argument("--token-secret", default=None, help="shared secret for --token-url (or BRIDGE_TOKEN_SECRET)")
    p.add_argument("--offline", action="store_true", help="use the built-in emulator even if a key is set")
    p.add_argument("--agents", default=None, metavar="FILE", help="agents file (TOML)")
    p.add_argument("--ptt", action="store_true", help="push-to-talk: a key starts and ends your turn")
    p.add_argument(
        "--bargein",
        choices=["exact", "naive"],
        default="exact",
        help="exact (default): stop at once and tell the server what was heard; naive: keep playing, "
        "as a plain client does (for comparisons)",
    )
    p.add_argument(
        "--reconnect-for",
        default=None,
        metavar="SECONDS",
        help="after a drop, keep reconnecting for this long (default 300, or BRIDGE_RECONNECT_FOR; 0: never; inf)",
    )
    p.add_argument(
        "--replay",
        choices=["summary", "items"],
        default=None,
        help="how a new session is told the conversation: one system message (default) or one item per turn",
    )
    p.add_argument("--replay-turns", type=int, default=None, metavar="N", help="replay at most N turns (40)")
    p.add_argument("--replay-chars", type=int, default=None, metavar="N", help="replay at most N characters (8000)")
    p.add_argument(
        "--aec",
        choices=["on", "off", "auto"],
        default=None,
        help="echo cancellation for open speakers (default auto: on when input and output are sound cards; "
        "or BRIDGE_AEC)",
    )
    p.add_argument(
        "--noise-reduction",
        choices=["near_field", "far_field", "off"],
        default=None,
        help="ask the server to reduce input noise (default far_field with echo cancellation, else the API's)",
    )
    k = p.add_argument_group("kiosk mode (docs/kiosk.md)")
    k.add_argument(
        "--kiosk", action="store_true", help="always on: a call opens when someone speaks, closes when they leave"
    )
    k.add_argument(
        "--hangup-after", default=None, metavar="SECONDS", help="hang up after this long with nobody speaking (30)"
    )
    k.add_argument("--max-call", default=None, metavar="SECONDS", help="hard cap on one call (900)")
    k.add_argument(
        "--max-call-minutes-per-hour", type=float, default=None, metavar="N", help="call budget per sliding hour"
    )
    k.add_argument("--health-port", type=int, default=None, metavar="PORT", help="serve /healthz and /metrics (off)")
    k.add_argument("--health-host", default=None, metavar="HOST", help="address for --health-port (127.0.0.1)")
    k.add_argument(
        "--wake-word", default=None, metavar="NAME", help="wake only on this phrase (okay_nabu, hey_mycroft)"
    )
    k.add_argument(
        "--transcript-dir", default=None, metavar="DIR", help="one JSONL transcript per call here (transcripts/)"
    )
    k.add_argument(
        "--keep-days", default=None, metavar="DAYS", help="delete call transcripts older than this (30; forever)"
    )
    k.add_argument(
        "--goodbye", default=None, metavar="TEXT", help="instructions for a short spoken goodbye before an idle hang-up"
    )
    p.add_argument("-v", "--verbose", action="count", default=0)


def _add_emulate(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("emulate", help="run the offline Realtime API emulator")
    p.add_argument("--host", default=EMULATOR_HOST)
    p.add_argument("--port", type=int, default=EMULATOR_PORT)
    p.add_argument(
        "--behaviour",
        default="tone",
        metavar="NAME",
        help="echo | tone | speech | script:FILE (default tone)",
    )
    p.add_argument("--speed", type=float, default=4.0, help="WS audio delta generation speed vs real time")
    p.add_argument("--think-ms", type=int, default=300, help="delay before a reply starts")
    p.add_argument("--reply-seconds", type=float, default=2.0, help="length of tone replies")
    p.add_argument("--log", default=None, metavar="PATH", help="JSONL log of every event sent and received")
    p.add_argument(
        "--api-keys",
        default=None,
        help="comma-separated valid API keys (default: any key of the sk-... form)",
    )
    f = p.add_argument_group("faults (docs/emulator.md; at run time: POST /_emulator/faults)")
    f.add_argument("--max-session-s", type=float, default=3600.0, metavar="S",
                   help="maximum session length: session_expired, then close 1001 (default 3600)")  # fmt: skip
    f.add_argument("--drop-after-s", type=float, default=None, metavar="S", help="drop every session S s in")
    f.add_argument("--drop-random-s", type=float, default=None, metavar="MEAN",
                   help="drop each session after a random time (exponential, this mean)")  # fmt: skip
    f.add_argument("--fault-seed", type=int, default=None, metavar="N", help="seed of --drop-random-s")
    f.add_argument("--stall-after-s", type=float, default=None, metavar="S",
                   help="every session goes silent S s in (no events, pings or RTP; nothing closed)")  # fmt: skip
    f.add_argument("--close-after-s", type=float, default=None, metavar="S", help="close every session S s in")
    f.add_argument("--close-code", type=int, default=1011, metavar="CODE", help="1001 | 1011 | 3000 | 4000")
    f.add_argument("--error-after-s", type=float, default=None, metavar="S",
                   help="send every session an error event S s in")  # fmt: skip
    f.add_argument("--error-code", default="server_error", metavar="CODE", help="its code (default server_error)")
    f.add_argument("--error-type", default="server_error", metavar="TYPE", help="its type (default server_error)")
    f.add_argument("--refuse-for-s", type=float, default=0.0, metavar="S",
                   help="refuse new keys, calls and sessions for S s after start-up")  # fmt: skip
    f.add_argument("--refuse-status", type=int, default=500, choices=(500, 429), help="with this HTTP status")
    f.add_argument("--text-only-after-assistant-text", action="store_true",
                   help="the known trap: a session seeded with assistant text items answers in text only")  # fmt: skip
    f.add_argument("--quote-context", action="store_true", help="replies quote the earlier user turn")
    f.add_argument("--no-admin", action="store_true", help="no /_emulator admin API (loopback-only anyway)")
    f.add_argument("--admin-allow", action="append", default=None, metavar="ADDR",
                   help="also answer admin requests from this client address (e.g. the lab's namespace)")  # fmt: skip
    p.add_argument("-v", "--verbose", action="count", default=0)


class _ServeVerbosity(argparse.Action):
    """``bridge serve -v`` / ``-vv`` (more detail) or ``-v json`` (one JSON object per log line)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        value: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        if value is not None and not isinstance(value, str):
            parser.error("-v takes one value")
        level = getattr(namespace, "verbose", 0) or 0
        if value is None or set(value) == {"v"}:
            namespace.verbose = level + 1 + (len(value) if value else 0)
        elif value in ("json", "text"):
            namespace.log_format = value
            namespace.verbose = max(level, 1)
        else:
            parser.error(f"-v takes nothing, json or text, got {value!r}")


def _add_serve(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("serve", help="token server + browser client")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--api-base", default=None, metavar="URL")
    p.add_argument("--offline", action="store_true")
    p.add_argument("--access-token", default=None, help="require this bearer token to mint (or BRIDGE_ACCESS_TOKEN)")
    p.add_argument("--require-token", action="store_true", help="refuse requests without a (kiosk) token")
    p.add_argument("--allow-origin", action="append", default=None, metavar="ORIGIN")
    p.add_argument("--key-ttl", type=int, default=60, metavar="SECONDS", help="ephemeral key lifetime")
    p.add_argument("--model", default=None)
    p.add_argument("--voice", default=None)
    p.add_argument("--instructions", default=None, metavar="TEXT|@FILE")
    p.add_argument("--agents", default=None, metavar="FILE", help="agents file (TOML): agents run on the server")
    p.add_argument("--language", default=None, help="input transcription language, e.g. ko")
    p.add_argument("--greeting", default=None, help="text sent as the user's first message on connect")
    p.add_argument("--transcripts-dir", default=None, metavar="DIR", help="server-side transcripts of agent calls")
    p.add_argument("--max-calls", type=int, default=None, metavar="N", help="concurrent agent calls (default 8)")
    p.add_argument("--rate-burst", type=int, default=None, metavar="N", help="mints per client at once (default 5)")
    p.add_argument("--rate-period", type=float, default=None, metavar="S", help="refill: one per S s (default 6)")
    p.add_argument("--token-burst", type=int, default=None, metavar="N", help="mints per token at once (default 60)")
    p.add_argument("--token-period", type=float, default=None, metavar="S", help="per-token refill (default 1 s)")
    p.add_argument("--web-root", default=None, metavar="DIR", help="the page's folder (default: web/)")
    p.add_argument("--redis-url", default=None, metavar="URL", help="run as a fleet replica; state in this Redis")
    p.add_argument("--replica-id", default=None, metavar="ID", help="this replica's name (default host-pid-random)")
    p.add_argument("--call-ttl", type=float, default=None, metavar="S", help="call lock lifetime (default 15 s)")
    p.add_argument("--handover-wait", type=float, default=None, metavar="S", help="SIGTERM handover (default 5 s)")
    p.add_argument("--fleet-minutes-per-day", type=float, default=None, metavar="MIN", help="agent call minutes")
    p.add_argument("-v", "--verbose", nargs="?", action=_ServeVerbosity, default=0, metavar="json",
                   help="-v, -vv: more detail; -v json: JSON log lines (or BRIDGE_LOG_FORMAT=json)")  # fmt: skip
    tokens = p.add_subparsers(dest="serve_command", metavar="tokens").add_parser(
        "tokens", help="per-kiosk tokens in the fleet's Redis: add | list | revoke"
    )
    actions = tokens.add_subparsers(dest="tokens_command", required=True, metavar="ACTION")
    add = actions.add_parser("add", help="issue a token for a kiosk (printed once)")
    add.add_argument("name", help="the kiosk's name, e.g. shop-12")
    add.add_argument("--max-calls", type=int, default=2, metavar="N", help="concurrent agent calls (0 = no cap)")
    add.add_argument("--minutes-per-day", type=float, default=0, metavar="MIN", help="agent call minutes (0 = no cap)")
    listing = actions.add_parser("list", help="kiosks with today's usage")
    listing.add_argument("--json", action="store_true")
    revoke = actions.add_parser("revoke", help="refuse a kiosk's token from now on")
    revoke.add_argument("name")
    for action in (add, listing, revoke):
        action.add_argument("--redis-url", default=None, metavar="URL", help="the fleet's Redis (or BRIDGE_REDIS_URL)")


def _add_bench(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("bench", help="latency lab: WebRTC vs WebSocket under network impairment")
    p.add_argument("--transports", default="webrtc,ws")
    p.add_argument("--profiles", default="clean")
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--stock", default="clean,wifi,lossy,mobile", metavar="PROFILES", help="stock aiortc runs on these")
    p.add_argument("--out", default="out/bench", metavar="DIR")
    p.add_argument("--live", action="store_true")
    p.add_argument("-v", "--verbose", action="count", default=0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bridge", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"bridge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_run(sub)
    devices = sub.add_parser("devices", help="list audio input and output devices")
    devices.add_argument("-v", "--verbose", action="count", default=0)
    _add_emulate(sub)
    _add_serve(sub)
    _add_bench(sub)
    return parser


def setup_logging(verbosity: int) -> None:
    """-v: bridge's INFO (connection steps, timings); -vv: bridge's DEBUG; -vvv: every library's DEBUG too."""
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logging.basicConfig(
        level=logging.DEBUG if verbosity >= 3 else logging.WARNING,
        format="%(asctime)s.%(msecs)03d %(name)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
    )
    logging.getLogger("bridge").setLevel(level)


def main(argv: list[str] | None = None) -> int:
    load_env()
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    module_name, where = COMMANDS[args.command]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        print(f"bridge {args.command}: not built yet ({where})", file=sys.stderr)
        return 2
    try:
        return int(module.main(args) or 0)
    except BridgeError as exc:
        print(f"bridge {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
