"""``tone``: each user turn is answered by an N-second tone plus a text transcript."""

from __future__ import annotations

from bridge.emulator.behaviours.base import Reply, Turn, default_transcript, tone


class ToneBehaviour:
    name = "tone"
    echoes_input = False

    def __init__(self, seconds: float = 2.0) -> None:
        self.seconds = seconds

    async def reply(self, turn: Turn) -> Reply:
        freq = 440.0 if turn.index % 2 == 0 else 660.0
        text = f"This is reply number {turn.index + 1}, a {self.seconds:g} second tone."
        return Reply(text=text, audio=tone(self.seconds, freq))

    def transcribe(self, pcm24: bytes, turn_index: int) -> str:
        return default_transcript(pcm24)
