"""``tone``: each user turn is answered by an N-second tone plus a text transcript."""

from __future__ import annotations

from bridge.emulator.behaviours.base import Reply, TimedBehaviour, Turn, tone


class ToneBehaviour(TimedBehaviour):
    name = "tone"

    async def reply(self, turn: Turn) -> Reply:
        freq = 440.0 if turn.index % 2 == 0 else 660.0
        text = f"This is reply number {turn.index + 1}, a {self.seconds:g} second tone."
        return Reply(text=text, audio=tone(self.seconds, freq))
