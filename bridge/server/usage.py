"""Token usage and its cost, from ``response.done``'s ``usage`` (PROTOCOL.md 4: ``response.done``).

The server sees usage only for the calls it runs itself (agent calls, over the sideband). The cost is an
estimate from the public price list per 1M tokens; cached input is billed at the cached price and is
part of ``input_tokens`` (so it is taken out of the full-price count). Prices, checked 2026 on
developers.openai.com/api/docs/models/<model>: gpt-realtime / -1.5 / -2 / -2.1 text in $4, cached $0.40,
out $16 (1.5) or $24 (2, 2.1); audio in $32, cached $0.40, out $64; the -mini models text in $0.60,
cached $0.06, out $2.40, audio in $10, cached $0.30, out $20. A model not listed counts tokens, no cost.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from types import MappingProxyType
from typing import Any


@dataclass(frozen=True)
class Prices:
    """US dollars per 1M tokens."""

    text_in: float
    text_cached: float
    text_out: float
    audio_in: float
    audio_cached: float
    audio_out: float


_REALTIME = Prices(4.0, 0.40, 16.0, 32.0, 0.40, 64.0)
_REALTIME_2 = Prices(4.0, 0.40, 24.0, 32.0, 0.40, 64.0)
_MINI = Prices(0.60, 0.06, 2.40, 10.0, 0.30, 20.0)
# Longest prefix wins.
PRICES = MappingProxyType(
    {
        "gpt-realtime": _REALTIME,
        "gpt-realtime-1.5": _REALTIME,
        "gpt-realtime-2": _REALTIME_2,
        "gpt-realtime-mini": _MINI,
        "gpt-realtime-2.1-mini": _MINI,
    }
)


def prices_for(model: str) -> Prices | None:
    best = max((p for p in PRICES if model == p or model.startswith(p + "-")), key=len, default=None)
    return PRICES[best] if best is not None else None


def _count(value: Any) -> int:
    """A token count from network input: a non-negative int, anything else 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**12 else 0


@dataclass(frozen=True)
class TokenUsage:
    text_in: int = 0  # full-price text input (cached excluded)
    text_cached: int = 0
    audio_in: int = 0
    audio_cached: int = 0
    text_out: int = 0
    audio_out: int = 0

    @classmethod
    def from_response(cls, usage: Any) -> TokenUsage:
        """``response.done``'s ``response.usage``; anything malformed counts as zero (never raises)."""
        if not isinstance(usage, dict):
            return cls()
        inp = usage.get("input_token_details")
        inp = inp if isinstance(inp, dict) else {}
        cached = inp.get("cached_tokens_details")
        cached = cached if isinstance(cached, dict) else {}
        out = usage.get("output_token_details")
        out = out if isinstance(out, dict) else {}
        text_cached, audio_cached = _count(cached.get("text_tokens")), _count(cached.get("audio_tokens"))
        text_in = _count(inp.get("text_tokens"))
        audio_in = _count(inp.get("audio_tokens"))
        if not inp and not out:  # only totals: count them as text
            return cls(text_in=_count(usage.get("input_tokens")), text_out=_count(usage.get("output_tokens")))
        return cls(
            text_in=max(0, text_in - text_cached),
            text_cached=text_cached,
            audio_in=max(0, audio_in - audio_cached),
            audio_cached=audio_cached,
            text_out=_count(out.get("text_tokens")),
            audio_out=_count(out.get("audio_tokens")),
        )

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    @property
    def input_tokens(self) -> int:
        return self.text_in + self.text_cached + self.audio_in + self.audio_cached

    @property
    def output_tokens(self) -> int:
        return self.text_out + self.audio_out

    def __bool__(self) -> bool:
        return bool(self.input_tokens or self.output_tokens)

    def cost_micro_usd(self, model: str) -> int:
        """Estimated cost in millionths of a dollar (integers add up exactly in Redis); 0 if unpriced."""
        p = prices_for(model)
        if p is None:
            return 0
        dollars_per_m = (
            self.text_in * p.text_in
            + self.text_cached * p.text_cached
            + self.audio_in * p.audio_in
            + self.audio_cached * p.audio_cached
            + self.text_out * p.text_out
            + self.audio_out * p.audio_out
        )
        return round(dollars_per_m)  # $ per 1M tokens x tokens = micro-dollars
