"""Bad input never kills a session (issue 15): hypothesis over the emulator's real client-event handler.

Arbitrary JSON, non-JSON text, binary frames, events with missing or wrong-typed fields and unknown types go
into ``Engine.handle_client_event`` (the function every transport calls). It must never raise, must answer
each rejected frame with exactly one ``error`` event carrying a code, and the session must still answer a
well-formed turn afterwards.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.emulator.behaviours import load_behaviour
from bridge.emulator.client_events import EVENT_SCHEMAS, WEBRTC_TYPES
from bridge.emulator.config import EmulatorConfig
from bridge.emulator.engine import Engine
from bridge.emulator.session_config import default_session

FIELDS = ["session", "audio", "item", "item_id", "content_index", "audio_end_ms", "response", "response_id",
          "previous_item_id", "event_id", "bogus"]  # fmt: skip
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
event_types = st.sampled_from([*WEBRTC_TYPES, *EVENT_SCHEMAS, "nope", "session.created", ""]) | st.text(max_size=12)
events = st.fixed_dictionaries({"type": event_types}, optional={f: json_values for f in FIELDS})
session_like = st.fixed_dictionaries(
    {"type": st.just("session.update"),
     "session": st.fixed_dictionaries({"type": st.sampled_from(["realtime", "transcription", "x"])},
                                      optional={k: json_values for k in ("instructions", "audio", "tools",
                                                                         "max_output_tokens", "output_modalities",
                                                                         "turn_detection", "model", "tracing")})},
)  # fmt: skip
frames = (
    events.map(json.dumps)
    | session_like.map(json.dumps)
    | json_values.map(json.dumps)
    | st.text(max_size=40)
    | st.binary(max_size=40)
)


def make_engine(transport: str) -> tuple[Engine, list[dict[str, Any]]]:
    config = EmulatorConfig(think_ms=0, speed=50.0, reply_seconds=0.1)
    engine = Engine(config, default_session("gpt-realtime"), load_behaviour("tone", 0.1), transport=transport)  # type: ignore[arg-type]
    out: list[dict[str, Any]] = []
    engine.add_listener(out.append)
    return engine, out


async def exercise(transport: str, batch: list[str | bytes]) -> None:
    engine, out = make_engine(transport)
    engine.start()
    try:
        for frame in batch:
            if engine.closed:  # after a session.close nothing more is read
                break
            before = len(out)
            await engine.handle_client_event(frame)  # never raises
            errors = [e for e in out[before:] if e["type"] == "error"]
            assert len(errors) <= 1
            for e in errors:
                assert isinstance(e["error"]["code"], str | None) and e["error"]["message"]
                assert e["error"]["type"] == "invalid_request_error"
            if isinstance(frame, bytes):
                assert errors and errors[0]["error"]["code"] == "invalid_event"
        assert not engine.closed or engine.close_code == 1000  # only session.close ends it
        if engine.closed:
            return
        # the session goes on: a well-formed text turn still gets a completed (out-of-band) response
        probe = {"probe": "1"}
        answered = asyncio.Event()
        engine.add_listener(lambda e: e["type"] == "response.done" and e["response"]["metadata"] == probe
                            and answered.set())  # fmt: skip
        item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}
        await engine.handle_client_event(json.dumps({"type": "conversation.item.create", "item": item}))
        await engine.handle_client_event(json.dumps({"type": "response.create", "response": {
            "output_modalities": ["text"], "conversation": "none", "metadata": probe}}))  # fmt: skip
        async with asyncio.timeout(5):
            await answered.wait()
        (done,) = [e for e in out if e["type"] == "response.done" and e["response"]["metadata"] == probe]
        assert done["response"]["status"] == "completed"
    finally:
        await engine.aclose()


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.lists(frames, min_size=1, max_size=8))
def test_ws_handler_survives_anything(batch: list[str | bytes]) -> None:
    asyncio.run(exercise("ws", batch))


@FUZZ
@given(st.lists(frames, min_size=1, max_size=8))
def test_webrtc_handler_survives_anything(batch: list[str | bytes]) -> None:
    asyncio.run(exercise("webrtc", batch))


@FUZZ
@given(events)
def test_every_rejected_event_gets_one_error(event: dict[str, Any]) -> None:
    async def run() -> None:
        engine, out = make_engine("ws")
        engine.start()
        try:
            await engine.handle_client_event(json.dumps(event))
            assert sum(1 for e in out if e["type"] == "error") <= 1
        finally:
            await engine.aclose()

    asyncio.run(run())
