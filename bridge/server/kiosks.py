"""``bridge serve tokens add|list|revoke``: one credential per kiosk, kept in the fleet's Redis.

A kiosk token (``bk_`` + 43 URL-safe characters, 256 bits) is printed once by ``add`` and stored only as
its SHA-256. A kiosk uses it where the shared ``--access-token`` would go (``Authorization: Bearer``,
``bridge run --token-secret``). Each kiosk has its own concurrent-call cap and call minutes per UTC day
(0 = none); ``revoke`` refuses its next request with ``403 kiosk_revoked`` (running calls go on).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import secrets
import sys
import time
from datetime import UTC, datetime
from typing import TextIO

from bridge.errors import ConfigError
from bridge.server.redis_store import KioskInfo, RedisStore, connect
from bridge.server.settings import token_admin_settings
from bridge.server.store import Limits, StoreUnavailable

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
TOKEN_PREFIX = "bk_"


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def check_name(name: str) -> str:
    if not NAME.match(name):
        raise ConfigError(f"a kiosk name is 1-64 of [A-Za-z0-9_-], starting with a letter or digit; got {name!r}")
    return name


def _admin_store(args: argparse.Namespace) -> RedisStore:
    s = token_admin_settings(args)
    unused = Limits(1, 1.0, 1, 1.0, 1, 0.0)  # the admin commands check no limits
    return RedisStore(connect(s.redis_url, "bridge-serve-tokens", timeout=3.0), s.redis_prefix, "tokens", unused, 15)


async def tokens_main(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    store = _admin_store(args)
    try:
        match args.tokens_command:
            case "add":
                return await _add(store, args, out)
            case "list":
                return await _list(store, args, out)
            case "revoke":
                name = check_name(args.name)
                if not await store.revoke_kiosk(name):
                    raise ConfigError(f"no kiosk named {name!r}")
                print(f"revoked {name}: its next request gets 403 kiosk_revoked", file=out)
                return 0
            case _:
                raise ConfigError("bridge serve tokens needs add, list or revoke")
    except StoreUnavailable as exc:
        raise ConfigError(f"cannot reach Redis: {exc}") from exc
    finally:
        await store.aclose()


async def _add(store: RedisStore, args: argparse.Namespace, out: TextIO) -> int:
    name = check_name(args.name)
    max_calls = int(args.max_calls)
    minutes = float(args.minutes_per_day)
    if max_calls < 0 or minutes < 0:
        raise ConfigError("--max-calls and --minutes-per-day must be >= 0 (0 = no cap)")
    token = new_token()
    if not await store.add_kiosk(name, token_hash(token), max_calls, minutes * 60):
        raise ConfigError(f"kiosk {name!r} exists; revoke it first to issue a new token")
    caps = f"max {max_calls or 'unlimited'} concurrent calls, {_minutes(minutes)} call minutes a day"
    print(f"kiosk {name} ({caps}); its token, shown only now:", file=sys.stderr)
    print(token, file=out)
    return 0


def _minutes(minutes: float) -> str:
    return "unlimited" if minutes <= 0 else f"{minutes:g}"


async def _list(store: RedisStore, args: argparse.Namespace, out: TextIO) -> int:
    now = time.time()
    rows = await store.kiosks(now)
    day = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")
    if getattr(args, "json", False):
        print(json.dumps({"day": day, "kiosks": [_row_json(r) for r in rows]}, indent=2), file=out)
        return 0
    head = ("NAME", "STATE", "MAX CALLS", "MIN/DAY", "CALLS", "MINUTES", "MINTS", "TOKENS IN", "TOKENS OUT", "COST $")
    lines = [head]
    for r in rows:
        t = r.today
        lines.append(
            (
                r.name,
                "-" if r.name == "_fleet" else "revoked" if r.revoked else "active",
                "-" if r.name == "_fleet" else str(r.max_calls or "-"),
                "-" if r.name == "_fleet" else _minutes(r.seconds_per_day / 60),
                f"{t.get('calls', 0):.0f}",
                f"{t.get('call_seconds', 0) / 60:.1f}",
                f"{t.get('mints', 0):.0f}",
                f"{sum(t.get(k, 0) for k in ('text_in', 'text_cached', 'audio_in', 'audio_cached')):.0f}",
                f"{t.get('text_out', 0) + t.get('audio_out', 0):.0f}",
                f"{t.get('cost_micro_usd', 0) / 1e6:.4f}",
            )
        )
    widths = [max(len(row[i]) for row in lines) for i in range(len(head))]
    print(f"usage today ({day} UTC); _fleet is every kiosk and every caller together", file=out)
    for row in lines:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip(), file=out)
    return 0


def _row_json(r: KioskInfo) -> dict[str, object]:
    return {
        "name": r.name,
        "revoked": r.revoked,
        "created": r.created,
        "max_calls": r.max_calls,
        "minutes_per_day": r.seconds_per_day / 60,
        "today": r.today,
    }
