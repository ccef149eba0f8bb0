"""``echo``: transport loopback for latency work.

WS: the engine answers each ``input_audio_buffer.append`` with the same audio as output deltas at once.
WebRTC: the transport relays received audio straight back (``echoes_input``).
"""

from __future__ import annotations

from bridge.emulator.behaviours.base import Reply, Turn, default_transcript


class EchoBehaviour:
    name = "echo"
    echoes_input = True

    async def reply(self, turn: Turn) -> Reply:
        # An explicit response.create still gets a (short, silent) answer so clients never hang.
        return Reply(text="(echo)", audio=b"\x00\x00" * 2400, think_ms=0)

    def transcribe(self, pcm24: bytes, turn_index: int) -> str:
        return default_transcript(pcm24)
