"""The AgentController: which agent is talking, and what happens when the model calls a function.

It implements the runtime's ``FunctionCallHandler`` hook (``bridge.call.runtime``), so the same controller
runs over WebRTC, WebSocket and the browser's sideband connection.

A tool call: run the tool (bounded by its timeout; errors become ``{"error": ...}``), send
``conversation.item.create`` with the ``function_call_output``, then ``response.create`` so the model
carries on (PROTOCOL.md 4.6).

A handoff (``transfer_to_<name>``), in this order:

1. ``session.update`` with the target's instructions and tools (type ``realtime``; no audio formats and
   no voice, so neither is reset - known peer bug);
2. ``conversation.item.create`` ``function_call_output`` ``{"ok": true, "agent": target}``;
3. ``response.create``: the next reply comes from the new agent, which already knows its tools (no
   "tool not found" after the switch).

``response.create`` is sent only once the response that carried the call(s) is done, and once per
response when it carried several calls: a second ``response.create`` while one is active is refused
with ``conversation_already_has_active_response`` (PROTOCOL.md 4.5).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bridge.agents.config import HANDOFF_PREFIX, Agent, AgentSet
from bridge.agents.tools import run_tool
from bridge.call.record import Turn
from bridge.protocol import events as ev

if TYPE_CHECKING:
    from bridge.call.runtime import Runtime

log = logging.getLogger(__name__)

RESPONSE_DONE_WAIT_S = 10.0  # if response.done never shows up, continue anyway rather than hang
MAX_TRACKED_RESPONSES = 64
MAX_REASON_CHARS = 500


@dataclass(frozen=True)
class Handoff:
    from_agent: str
    to_agent: str
    reason: str
    call_id: str
    at: float


@dataclass
class _ResponseState:
    pending: set[str]
    done: asyncio.Event
    continued: bool = False


class AgentController:
    """State and ordering for agents, tools and handoffs in one session (one controller per call)."""

    def __init__(self, agents: AgentSet, clock: Callable[[], float] = time.monotonic) -> None:
        self.agents = agents
        self.current: Agent = agents.start_agent
        self.history: list[Handoff] = []
        self.tool_calls = 0
        self.tool_errors = 0
        self._clock = clock
        self._responses: OrderedDict[str, _ResponseState] = OrderedDict()

    # ---- what to configure ---------------------------------------------------------------------------

    def session_config(self, base: dict[str, Any]) -> dict[str, Any]:
        """The session for the active agent (the start agent at first; after a reconnect, the one that was
        active when the connection dropped): see :meth:`AgentSet.session_config`."""
        return self.agents.session_config(base, self.current.name)

    def session_update(self, agent: Agent) -> dict[str, Any]:
        """The ``session.update`` that makes ``agent`` the active one."""
        session = self.agents.agent_fields(agent.name)
        if agent.transcription_language != self.current.transcription_language:
            # Only the transcription object, nested: formats, turn detection and voice stay untouched.
            session["audio"] = {"input": {"transcription": self.agents.transcription_for(agent.name)}}
        return {"type": "session.update", "session": session}

    # ---- the runtime hooks -----------------------------------------------------------------------------

    def on_event(self, e: ev.Event) -> None:
        """Every server event, in order, before the runtime acts on it (see module doc)."""
        match e:
            case ev.FunctionCall(response_id=rid, call_id=cid):
                self._state(rid).pending.add(cid)
            case ev.ResponseDone(response_id=rid):
                self._state(rid).done.set()
            case _:
                pass

    async def on_function_call(self, call: ev.FunctionCall, runtime: Runtime) -> None:
        state = self._state(call.response_id)
        state.pending.add(call.call_id)
        agent = self.current
        try:
            if call.name.startswith(HANDOFF_PREFIX) and call.name[len(HANDOFF_PREFIX) :] in agent.handoffs:
                await self._handoff(call, runtime, call.name[len(HANDOFF_PREFIX) :])
            elif (tool := agent.tool(call.name)) is not None:
                result = await run_tool(tool, call.arguments, clock=self._clock)
                self.tool_calls += 1
                self.tool_errors += 0 if result.ok else 1
                _record_tool(runtime, agent, call, _loads(result.output), result.ok, result.duration_ms)
                runtime.console.line(
                    "tool", f"{call.name}({call.arguments}) -> {result.output} [{result.duration_ms:.0f} ms]"
                )
                await _send_output(runtime, call.call_id, result.output)
            else:
                # A call for a tool this agent does not have (e.g. from before a switch): answer it, so
                # the model is never left waiting on a function call.
                msg = f"tool {call.name!r} is not available to agent {agent.name!r}"
                log.warning("%s", msg)
                self.tool_errors += 1
                _record_tool(runtime, agent, call, {"error": msg}, False, 0.0)
                await _send_output(runtime, call.call_id, json.dumps({"error": msg}))
        finally:
            state.pending.discard(call.call_id)
        await self._continue(call.response_id, state, runtime)

    # ---- internals --------------------------------------------------------------------------------------

    async def _handoff(self, call: ev.FunctionCall, runtime: Runtime, target_name: str) -> None:
        source = self.current
        target = self.agents.agents[target_name]
        args = _loads(call.arguments)
        reason = str(args.get("reason", "")).strip()[:MAX_REASON_CHARS] if isinstance(args, dict) else ""
        # 1. the new agent's config first, so the response we trigger below already runs as the target
        await runtime.send(self.session_update(target))
        self.current = target
        self.history.append(Handoff(source.name, target.name, reason, call.call_id, self._clock()))
        runtime.transcript.write(
            "handoff", call_id=call.call_id, reason=reason, **{"from": source.name, "to": target.name}
        )
        runtime.console.line("handoff", f"{source.name} -> {target.name}: {reason}")
        runtime.record.remember(Turn("note", f"handed over from {source.name} to {target.name}"))
        log.info("handoff %s -> %s (%s)", source.name, target.name, reason)
        # 2. then the tool output
        await _send_output(runtime, call.call_id, json.dumps({"ok": True, "agent": target.name}))

    async def _continue(self, response_id: str, state: _ResponseState, runtime: Runtime) -> None:
        """3. ``response.create`` once the call's response is done and all its calls are answered."""
        await self._wait_done(response_id, state, runtime)
        if state.pending or state.continued:
            return
        state.continued = True
        await runtime.send({"type": "response.create"})

    async def _wait_done(self, response_id: str, state: _ResponseState, runtime: Runtime) -> None:
        try:
            async with asyncio.timeout(RESPONSE_DONE_WAIT_S):
                await state.done.wait()
        except TimeoutError:
            log.warning("no response.done for %s after %.0f s; continuing anyway", response_id, RESPONSE_DONE_WAIT_S)

    def _state(self, response_id: str) -> _ResponseState:
        state = self._responses.get(response_id)
        if state is None:
            state = self._responses[response_id] = _ResponseState(set(), asyncio.Event())
            while len(self._responses) > MAX_TRACKED_RESPONSES:
                self._responses.popitem(last=False)
        return state


def _record_tool(runtime: Runtime, agent: Agent, call: ev.FunctionCall, result: Any, ok: bool, ms: float) -> None:
    """The transcript's ``tool`` line for one call, and the call in the history a new session is told."""
    runtime.record.remember(Turn("tool", f"{call.name}({call.arguments}) returned {json.dumps(result)}"))
    runtime.transcript.write(
        "tool",
        agent=agent.name,
        name=call.name,
        call_id=call.call_id,
        arguments=_loads(call.arguments),
        result=result,
        ok=ok,
        duration_ms=ms,
    )


async def _send_output(runtime: Runtime, call_id: str, output: str) -> None:
    await runtime.send(
        {
            "type": "conversation.item.create",
            "item": {"type": "function_call_output", "call_id": call_id, "output": output},
        }
    )


def _loads(text: str) -> Any:
    """Arguments/results for the transcript: parsed JSON when it is JSON, the raw string otherwise."""
    try:
        return json.loads(text)
    except (json.JSONDecodeError, TypeError):
        return text
