"""Pluggable reply behaviours: ``echo``, ``tone``, ``speech``, ``script:FILE`` (one module each)."""

from __future__ import annotations

from bridge.emulator.behaviours.base import Behaviour, FunctionCall, InjectedError, Reply, Turn
from bridge.errors import ConfigError


def load_behaviour(spec: str, reply_seconds: float = 2.0, *, quote_context: bool = False) -> Behaviour:
    """A behaviour from its CLI name (``--behaviour``); ``quote_context`` wraps it (``--quote-context``)."""
    behaviour = _load(spec, reply_seconds)
    if quote_context:
        from bridge.emulator.behaviours.quote import QuotingBehaviour

        return QuotingBehaviour(behaviour)
    return behaviour


def _load(spec: str, reply_seconds: float) -> Behaviour:
    if spec == "echo":
        from bridge.emulator.behaviours.echo import EchoBehaviour

        return EchoBehaviour()
    if spec == "tone":
        from bridge.emulator.behaviours.tone import ToneBehaviour

        return ToneBehaviour(reply_seconds)
    if spec == "speech":
        from bridge.emulator.behaviours.speech import SpeechBehaviour

        return SpeechBehaviour(reply_seconds)
    if spec.startswith("script:"):
        from bridge.emulator.behaviours.script import ScriptBehaviour

        return ScriptBehaviour(spec.removeprefix("script:"), reply_seconds)
    raise ConfigError(f"unknown behaviour {spec!r}: use echo, tone, speech or script:FILE")


__all__ = ["Behaviour", "FunctionCall", "InjectedError", "Reply", "Turn", "load_behaviour"]
