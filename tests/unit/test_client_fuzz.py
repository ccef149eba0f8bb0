"""Bad input from the network never kills a call: the runtime's event handler and the links' message
parsing, fed arbitrary JSON, non-JSON text, binary and wrong-typed fields (hypothesis), never raise; they
count what they drop and the session goes on."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.link.webrtc import WebRTCLink
from bridge.media.track import MicTrack
from bridge.protocol import events as ev
from tests.helpers import scripted_runtime

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
KNOWN = sorted(ev.TYPED) + ["error", "output_audio_buffer.started", "conversation.item.truncated"]
FIELDS = [
    "response", "item", "item_id", "response_id", "delta", "audio_start_ms", "audio_end_ms", "error",
    "session", "previous_item_id", "transcript", "text", "call_id", "name", "arguments", "content_index",
]  # fmt: skip
EVENTS = st.fixed_dictionaries(
    {"type": st.sampled_from(KNOWN) | st.text(max_size=30)},
    optional={f: JSON for f in FIELDS},
)
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@SETTINGS
@given(events=st.lists(EVENTS, min_size=1, max_size=8), transport=st.sampled_from(["ws", "webrtc"]))
def test_the_runtime_takes_any_event_and_goes_on(
    tmp_path_factory: Any, events: list[dict[str, Any]], transport: str
) -> None:
    async def run() -> None:
        rt, link, playout = scripted_runtime(tmp_path_factory.mktemp("rt"), transport)  # type: ignore[arg-type]
        for raw in events:
            await rt.handle(ev.parse(raw))
        # and a normal reply still plays
        await rt.handle(ev.parse({"type": "response.created", "response": {"id": "resp_ok"}}))
        item = {"id": "item_ok", "type": "message", "role": "assistant", "content": []}
        await rt.handle(ev.parse({"type": "response.output_item.added", "response_id": "resp_ok", "item": item}))
        if transport == "ws":
            delta = {"type": "response.output_audio.delta", "response_id": "resp_ok", "item_id": "item_ok"}
            await rt.handle(ev.parse({**delta, "output_index": 0, "content_index": 0, "delta": "AAAAAA=="}))
        else:
            rt.on_remote_audio(np.ones(960, np.int16))
        assert playout.queued_ms > 0

    asyncio.run(run())


@SETTINGS
@given(messages=st.lists(st.binary(max_size=64) | st.text(max_size=64) | JSON.map(json.dumps), max_size=10))
def test_the_data_channel_parser_takes_anything(messages: list[Any]) -> None:
    async def run() -> None:
        async with aiohttp.ClientSession() as http:
            link = WebRTCLink(http, "http://127.0.0.1:9/v1", "ek_test", MicTrack(), lambda pcm: None)
            for message in messages:
                link._on_message(message)
            objects = 0
            for message in messages:
                try:
                    objects += isinstance(json.loads(message), dict)
                except (ValueError, UnicodeDecodeError, RecursionError):
                    pass
            assert link._events.qsize() == objects and link.malformed.count == len(messages) - objects
            link._on_message(json.dumps({"type": "session.created", "session": {}}))
            assert (await link.recv()) is not None

    asyncio.run(run())
