"""The official ``openai`` SDK against the emulator: client secrets and WS realtime conversations.

Every server event the emulator sent during each test is validated against the SDK's pydantic types
and (when ../shared is present) the OpenAPI spec; ``test_spec_oracle_full_scenario`` requires the spec.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import openai
import pytest
from emulator_client import checked_emulator
from spec_oracle import assert_valid_server_events

from bridge.emulator.testing import RunningEmulator, running_emulator

RATE = 24_000


def burst_then_silence(tone_ms: int = 600, silence_ms: int = 500) -> bytes:
    t = np.arange(int(RATE * tone_ms / 1000)) / RATE
    tone = 0.3 * np.sin(2 * np.pi * 300 * t)
    pcm = np.concatenate([tone, np.zeros(int(RATE * silence_ms / 1000))])
    return (pcm * 32767).astype(np.int16).tobytes()


async def append_all(conn: Any, pcm: bytes, chunk: int = 4800) -> None:
    for i in range(0, len(pcm), chunk):
        await conn.input_audio_buffer.append(audio=base64.b64encode(pcm[i : i + chunk]).decode())


async def collect_until(conn: Any, etype: str) -> list[Any]:
    events = []
    async for event in conn:
        events.append(event)
        if event.type == etype:
            return events
    raise AssertionError(f"connection ended before {etype}")


@pytest.fixture
async def emu() -> AsyncIterator[RunningEmulator]:
    async with checked_emulator(think_ms=0, reply_seconds=0.5, speed=20.0) as e:
        yield e


async def test_sdk_mints_client_secret(emu: RunningEmulator) -> None:
    client = openai.AsyncOpenAI(api_key=emu.api_key, base_url=emu.base_url)
    secret = await client.realtime.client_secrets.create(
        expires_after={"anchor": "created_at", "seconds": 120},
        session={"type": "realtime", "model": "gpt-realtime", "audio": {"output": {"voice": "marin"}}},
    )
    assert secret.value.startswith("ek_") and len(secret.value) == 35
    assert secret.session.type == "realtime"
    assert secret.session.audio.output.voice == "marin"
    # the ephemeral key opens a WS session configured by the secret
    ek_client = openai.AsyncOpenAI(api_key=secret.value, base_url=emu.base_url)
    async with ek_client.realtime.connect(model="gpt-realtime") as conn:
        created = await conn.recv()
        assert created.type == "session.created"
        assert created.session.audio.output.voice == "marin"


async def test_sdk_ws_conversation_with_server_vad(emu: RunningEmulator) -> None:
    client = openai.AsyncOpenAI(api_key=emu.api_key, base_url=emu.base_url)
    async with client.realtime.connect(model="gpt-realtime") as conn:
        assert (await conn.recv()).type == "session.created"
        await conn.session.update(
            session={
                "type": "realtime",
                "instructions": "be brief",
                "audio": {"input": {"transcription": {"model": "gpt-4o-mini-transcribe"}}},
            }
        )
        updated = await conn.recv()
        assert updated.type == "session.updated"
        assert updated.session.audio.input.transcription.model == "gpt-4o-mini-transcribe"
        await append_all(conn, burst_then_silence())
        events = await collect_until(conn, "response.done")
        types = [e.type for e in events]
        assert types[:2] == ["input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped"]
        assert "conversation.item.input_audio_transcription.completed" in types
        audio = b"".join(base64.b64decode(e.delta) for e in events if e.type == "response.output_audio.delta")
        assert len(audio) == RATE  # 0.5 s PCM16
        transcript = "".join(e.delta for e in events if e.type == "response.output_audio_transcript.delta")
        assert transcript and events[-1].response.status == "completed"
        assert (await conn.recv()).type == "rate_limits.updated"


async def test_sdk_manual_turns_and_text_item(emu: RunningEmulator) -> None:
    client = openai.AsyncOpenAI(api_key=emu.api_key, base_url=emu.base_url)
    async with client.realtime.connect(model="gpt-realtime") as conn:
        await conn.recv()
        await conn.session.update(session={"type": "realtime", "audio": {"input": {"turn_detection": None}}})
        assert (await conn.recv()).type == "session.updated"
        await append_all(conn, burst_then_silence(300, 100))
        await conn.input_audio_buffer.commit()
        await conn.response.create()
        events = await collect_until(conn, "response.done")
        types = [e.type for e in events]
        assert types[:3] == ["input_audio_buffer.committed", "conversation.item.added", "conversation.item.done"]
        assert "input_audio_buffer.speech_started" not in types
        await conn.recv()  # rate_limits.updated
        await conn.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hello"}]}
        )
        await conn.response.create(response={"output_modalities": ["text"], "metadata": {"k": "v"}})
        events = await collect_until(conn, "response.done")
        assert events[-1].response.metadata == {"k": "v"}
        text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
        assert text and not any(e.type == "response.output_audio.delta" for e in events)


@pytest.mark.spec
async def test_spec_oracle_full_scenario() -> None:
    """A broad scenario whose every server event must validate against the OpenAPI spec (never skipped in CI)."""
    async with running_emulator(think_ms=0, reply_seconds=0.3, speed=20.0) as emu:
        client = openai.AsyncOpenAI(api_key=emu.api_key, base_url=emu.base_url)
        async with client.realtime.connect(model="gpt-realtime") as conn:
            await conn.recv()
            await conn.session.update(
                session={"type": "realtime", "audio": {"input": {"transcription": {"model": "whisper-1"}}}}
            )
            await append_all(conn, burst_then_silence())
            await collect_until(conn, "response.done")
            await conn.send({"type": "bogus.type"})
            await conn.input_audio_buffer.commit()
            await conn.response.cancel()
            await conn.conversation.item.retrieve(item_id="missing")
            await conn.response.create(response={"output_modalities": ["text"]})
            await collect_until(conn, "response.done")
        checked = assert_valid_server_events(emu.server_events(), spec=True)
        assert checked > 30
