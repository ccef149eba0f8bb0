"""Protocol details of issue 19: transcription sessions, beta-era shapes, the idle timeout, streamed text
deltas with ``obfuscation``, and a sideband's ``session.update`` carrying another model. Every server event
validates against the official SDK's types and the spec."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import numpy as np
import openai
import pytest
from emulator_client import checked_emulator

from bridge.emulator.testing import RunningEmulator

RATE = 24_000


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def speech(tone_ms: int = 600, silence_ms: int = 500) -> bytes:
    t = np.arange(int(RATE * tone_ms / 1000)) / RATE
    pcm = np.concatenate([0.3 * np.sin(2 * np.pi * 300 * t), np.zeros(int(RATE * silence_ms / 1000))])
    return (pcm * 32767).astype(np.int16).tobytes()


@pytest.fixture
async def emu() -> AsyncIterator[RunningEmulator]:
    async with checked_emulator(think_ms=0, reply_seconds=0.3, speed=20.0) as e:
        yield e


async def events_until(ws: aiohttp.ClientWebSocketResponse, etype: str, timeout: float = 5.0) -> list[dict[str, Any]]:
    seen = []
    async with asyncio.timeout(timeout):
        while True:
            msg = await ws.receive()
            assert msg.type == aiohttp.WSMsgType.TEXT, msg
            seen.append(json.loads(msg.data))
            if seen[-1]["type"] == etype:
                return seen


async def test_transcription_session_over_intent(emu: RunningEmulator) -> None:
    """``?intent=transcription`` ([PROBE 7]): audio -> VAD -> input transcription, and never a response."""
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(emu.ws_url + "?intent=transcription", headers=auth(emu.api_key))
        created = (await events_until(ws, "session.created"))[-1]["session"]
        assert (created["type"], created["object"]) == ("transcription", "realtime.transcription_session")
        await ws.send_json(
            {
                "type": "session.update",
                "session": {"type": "transcription", "audio": {"input": {
                    "transcription": {"model": "gpt-4o-mini-transcribe"}, "turn_detection": {"type": "server_vad"}}}},
            }
        )  # fmt: skip
        updated = (await events_until(ws, "session.updated"))[-1]["session"]
        assert updated["audio"]["input"]["transcription"] == {
            "model": "gpt-4o-mini-transcribe",
            "language": None,
            "prompt": None,
        }
        for i in range(0, len(pcm := speech()), 4800):
            await ws.send_json({"type": "input_audio_buffer.append", "audio": _b64(pcm[i : i + 4800])})
        seen = await events_until(ws, "conversation.item.input_audio_transcription.completed")
        types = [e["type"] for e in seen]
        assert types[:5] == [
            "input_audio_buffer.speech_started",
            "input_audio_buffer.speech_stopped",
            "input_audio_buffer.committed",
            "conversation.item.added",
            "conversation.item.done",
        ]
        deltas = [e for e in seen if e["type"].endswith("transcription.delta")]
        assert len(deltas) > 1 and all(isinstance(d["obfuscation"], str) for d in deltas)
        assert "".join(d["delta"] for d in deltas) == seen[-1]["transcript"]
        assert seen[-1]["usage"]["type"] == "tokens"
        await ws.send_json({"type": "response.create"})
        error = (await events_until(ws, "error"))[-1]["error"]
        assert error["code"] == "invalid_value" and not any(e["type"].startswith("response.") for e in seen)
        await ws.send_json({"type": "session.update", "session": {"type": "realtime"}})
        error = (await events_until(ws, "error"))[-1]["error"]
        assert error["message"] == "Passing a realtime session update event to a transcription session is not allowed."
        await ws.close()


async def test_transcription_client_secret_through_the_sdk(emu: RunningEmulator) -> None:
    client = openai.AsyncOpenAI(api_key=emu.api_key, base_url=emu.base_url)
    secret = await client.realtime.client_secrets.create(
        session={"type": "transcription", "audio": {"input": {"transcription": {"model": "whisper-1"}}}}
    )
    assert secret.session.type == "transcription"
    ek = openai.AsyncOpenAI(api_key=secret.value, base_url=emu.base_url)
    async with ek.realtime.connect(model="gpt-realtime") as conn:  # the secret's session type wins
        created = await conn.recv()
        assert created.type == "session.created" and created.session.type == "transcription"
        pcm = speech()
        for i in range(0, len(pcm), 4800):
            await conn.input_audio_buffer.append(audio=_b64(pcm[i : i + 4800]))
        deltas = []
        async for event in conn:
            if event.type == "conversation.item.input_audio_transcription.delta":
                deltas.append(event.delta)
            if event.type == "conversation.item.input_audio_transcription.completed":
                assert event.usage.type == "duration"  # whisper-1 bills seconds
                break
        assert len(deltas) == 1  # whisper-1 sends the whole text in one delta


async def test_beta_shapes_fail_as_the_service_fails(emu: RunningEmulator) -> None:
    async with aiohttp.ClientSession() as http:
        for path in ("/realtime?model=gpt-4o-realtime-preview-2024-12-17", "/realtime/sessions",
                     "/realtime/transcription_sessions"):  # fmt: skip
            headers = {**auth(emu.api_key), "Content-Type": "application/sdp"}
            async with http.post(emu.base_url + path, data="v=0", headers=headers) as r:
                assert r.status == 400, path
                error = (await r.json())["error"]
                assert (error["code"], error["type"]) == ("beta_api_shape_disabled", "invalid_request_error")
                assert error["message"].startswith("The Realtime Beta API is no longer supported.")
        headers = {**auth(emu.api_key), "OpenAI-Beta": "realtime=v1"}
        async with http.post(f"{emu.base_url}/realtime/client_secrets", json={}, headers=headers) as r:
            assert r.status == 400 and (await r.json())["error"]["code"] == "beta_api_shape_disabled"


async def test_idle_timeout_triggers_a_turn(emu: RunningEmulator) -> None:
    """PROTOCOL.md 4.7: after the reply has played, idle_timeout_ms of silence -> timeout_triggered, an empty
    user turn and a response."""
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(emu.ws_url + "?model=gpt-realtime", headers=auth(emu.api_key))
        await events_until(ws, "session.created")
        td = {"type": "server_vad", "idle_timeout_ms": 5000}
        await ws.send_json({"type": "session.update", "session": {"type": "realtime", "audio": {"input": {
            "turn_detection": td}}}})  # fmt: skip
        updated = (await events_until(ws, "session.updated"))[-1]
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        seen = await events_until(ws, "input_audio_buffer.timeout_triggered", timeout=8)
        assert loop.time() - t0 >= 4.9 and updated["type"] == "session.updated"
        trig = seen[-1]
        assert trig["audio_end_ms"] - trig["audio_start_ms"] >= 5000
        after = await events_until(ws, "response.done", timeout=5)
        types = [e["type"] for e in after]
        assert types[:3] == ["input_audio_buffer.committed", "conversation.item.added", "conversation.item.done"]
        assert after[0]["item_id"] == trig["item_id"] and "response.created" in types
        await ws.close()


async def test_text_replies_stream_word_by_word_with_obfuscation(emu: RunningEmulator) -> None:
    client = openai.AsyncOpenAI(api_key=emu.api_key, base_url=emu.base_url)
    async with client.realtime.connect(model="gpt-realtime") as conn:
        await conn.recv()
        await conn.response.create(response={"output_modalities": ["text"]})
        deltas, done = [], None
        async for event in conn:
            if event.type == "response.output_text.delta":
                deltas.append(event)
            if event.type == "response.output_text.done":
                done = event.text
                break
        assert len(deltas) > 3 and all(d.model_extra and d.model_extra.get("obfuscation") for d in deltas)
        assert "".join(d.delta for d in deltas) == done


async def test_sideband_session_update_with_another_model_is_applied(emu: RunningEmulator) -> None:
    """openai-agents attaches with its default model in session.update; the rest of the update applies and
    the call keeps its model (docs/protocol-notes.md "Sideband attach")."""
    from bridge.emulator.session_config import default_session

    engine = emu.state.new_engine(default_session("gpt-realtime"), "webrtc")
    engine.start()
    engine.add_listener(lambda event: None)  # the call's data channel
    engine.call_id = "rtc_" + "1" * 32
    emu.state.calls[engine.call_id] = _StandIn(engine)  # type: ignore[assignment]
    client = openai.AsyncOpenAI(api_key=emu.api_key, base_url=emu.base_url)
    async with client.realtime.connect(call_id=engine.call_id) as side:
        assert (await side.recv()).type == "session.created"
        await side.session.update(session={"type": "realtime", "model": "gpt-realtime-2.1", "instructions": "agent"})
        updated = await side.recv()
        assert updated.type == "session.updated"
        assert (updated.session.model, updated.session.instructions) == ("gpt-realtime", "agent")
    await engine.aclose()


class _StandIn:
    """What the sideband needs of a call: its engine."""

    def __init__(self, engine: Any) -> None:
        self.id, self.engine = engine.call_id, engine

    async def aclose(self) -> None:
        await self.engine.aclose()

    async def wait_closed(self) -> None:
        await self.engine.wait_closed()


def _b64(pcm: bytes) -> str:
    import base64

    return base64.b64encode(pcm).decode()
