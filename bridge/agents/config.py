"""The agents file (TOML): agents, their instructions, tools and handoffs, and one start agent.

Format (``docs/agents.md`` has the full reference)::

    start = "triage"                      # required: the agent that answers first
    voice = "marin"                       # optional: ONE voice for the whole session
    transcription_language = "ko"         # optional: ISO-639-1 default for every agent
    transcription_model = "gpt-4o-mini-transcribe"
    tool_timeout_s = 10

    [[agents]]
    name = "triage"                        # [A-Za-z0-9_-], at most 50 characters
    description = "Finds out who the user is and routes them."   # shown to agents that can hand off to it
    instructions = "..."                   # or instructions_file = "triage.md" (relative to this file)
    tools = ["bridge.agents.builtin_tools:get_weather"]          # module:function
    handoffs = ["korean_20s", "empathetic"]
    transcription_language = "ko"          # optional per-agent override

Validation collects every problem and raises ONE :class:`~bridge.errors.ConfigError` with one line per
problem (unknown handoff target, duplicate name, missing/unknown start agent, unknown tool or import
failure, unreadable instructions file, ...). Cycles between agents are allowed.

Voice: the Realtime API cannot change a session's voice once it has produced audio (PROTOCOL.md 4.2),
so a session keeps one voice: the file's ``voice``, else the start agent's. A different ``voice`` on
another agent is ignored with a warning.
"""

from __future__ import annotations

import logging
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge.agents.tools import DEFAULT_TIMEOUT_S, Tool, ToolError, load_tool
from bridge.errors import ConfigError

log = logging.getLogger(__name__)

NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,50}$")  # function names allow 64; "transfer_to_" takes 12
HANDOFF_PREFIX = "transfer_to_"
DEFAULT_TRANSCRIPTION_MODEL = "gpt-4o-mini-transcribe"

TOP_KEYS = {"start", "voice", "transcription_language", "transcription_model", "tool_timeout_s", "agents"}
AGENT_KEYS = {
    "name",
    "description",
    "instructions",
    "instructions_file",
    "voice",
    "tools",
    "handoffs",
    "transcription_language",
}

# Appended to every agent of a set with handoffs. Peer bug avoided: after a switch the new agent greeted
# the user again or said goodbye instead of simply carrying on (issue #7).
HANDOFF_NOTE = (
    "\n\n# Working with other agents\n"
    "You are one of several agents in the same voice conversation; the user hears one voice throughout. "
    "When you take over from another agent, continue the conversation naturally from where it is: do not "
    "greet the user again, do not introduce yourself as new, and never say goodbye because of a transfer. "
    "To hand the user to another agent, call its transfer_to_<name> tool with a short reason; do not "
    "announce the transfer at length and do not mention tools."
)


@dataclass(frozen=True)
class Agent:
    name: str
    instructions: str
    description: str = ""
    tools: tuple[Tool, ...] = ()
    handoffs: tuple[str, ...] = ()
    voice: str | None = None
    transcription_language: str | None = None

    def tool(self, name: str) -> Tool | None:
        return next((t for t in self.tools if t.name == name), None)


@dataclass(frozen=True)
class AgentSet:
    agents: dict[str, Agent]
    start: str
    voice: str | None = None
    transcription_model: str = DEFAULT_TRANSCRIPTION_MODEL
    source: Path | None = None
    warnings: tuple[str, ...] = field(default=())

    @property
    def start_agent(self) -> Agent:
        return self.agents[self.start]

    def handoff_tool(self, target: str) -> dict[str, Any]:
        """The function tool that hands the conversation to ``target``."""
        agent = self.agents[target]
        about = f" {agent.description}" if agent.description else ""
        return {
            "type": "function",
            "name": HANDOFF_PREFIX + target,
            "description": f"Hand the conversation over to the {target} agent.{about}",
            "parameters": {
                "type": "object",
                "properties": {
                    "reason": {
                        "type": "string",
                        "description": "One short sentence: why you hand over and what the user needs.",
                    }
                },
                "required": ["reason"],
                "additionalProperties": False,
            },
        }

    def tools_for(self, name: str) -> list[dict[str, Any]]:
        """Every tool definition agent ``name`` is offered: its own tools, then one per handoff target."""
        agent = self.agents[name]
        return [t.definition() for t in agent.tools] + [self.handoff_tool(t) for t in agent.handoffs]

    def instructions_for(self, name: str) -> str:
        agent = self.agents[name]
        if len(self.agents) > 1:
            return agent.instructions.rstrip() + HANDOFF_NOTE
        return agent.instructions

    def transcription_for(self, name: str) -> dict[str, Any]:
        lang = self.agents[name].transcription_language
        out: dict[str, Any] = {"model": self.transcription_model}
        if lang:
            out["language"] = lang
        return out

    def agent_fields(self, name: str) -> dict[str, Any]:
        """What changes on a handoff: instructions and tools (never audio formats or voice)."""
        return {
            "type": "realtime",
            "instructions": self.instructions_for(name),
            "tools": self.tools_for(name),
            "tool_choice": "auto",
        }

    def session_config(self, base: dict[str, Any], agent: str | None = None) -> dict[str, Any]:
        """``base`` (a GA session, e.g. from :func:`bridge.protocol.session_config.realtime_session`) set up
        for ``agent`` (default: the start agent; a reconnect starts with the agent that was active).

        Keeps ``base``'s model, turn detection and formats; sets the agent's instructions, tools and
        transcription language, and the call's one voice.
        """
        name = agent or self.start
        out = {**base, **self.agent_fields(name)}
        audio = {k: dict(v) for k, v in (base.get("audio") or {}).items()}
        audio.setdefault("input", {})["transcription"] = self.transcription_for(name)
        voice = self.voice or self.agents[self.start].voice  # one voice per call: it cannot change
        if voice:
            audio.setdefault("output", {})["voice"] = voice
        out["audio"] = audio
        return out


def _problem_list(problems: list[str], source: Path) -> ConfigError:
    lines = "\n".join(f"  - {p}" for p in problems)
    n = len(problems)
    return ConfigError(f"agents file {source} has {n} problem{'s' if n > 1 else ''}:\n{lines}")


def _str(value: Any, where: str, problems: list[str]) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        problems.append(f"{where} must be a string")
        return None
    return value


def _str_list(value: Any, where: str, problems: list[str]) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        problems.append(f"{where} must be a list of strings")
        return []
    return list(value)


def _instructions(raw: dict[str, Any], where: str, base: Path, problems: list[str]) -> str:
    inline = _str(raw.get("instructions"), f"{where}: instructions", problems)
    file = _str(raw.get("instructions_file"), f"{where}: instructions_file", problems)
    if inline is not None and file is not None:
        problems.append(f"{where}: give instructions or instructions_file, not both")
        return inline
    if file is not None:
        path = base / file
        try:
            text = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            problems.append(f"{where}: cannot read instructions_file {file!r}: {exc.strerror or exc}")
            return ""
        except UnicodeDecodeError:
            problems.append(f"{where}: instructions_file {file!r} is not UTF-8 text")
            return ""
        if not text:
            problems.append(f"{where}: instructions_file {file!r} is empty")
        return text
    if inline is None or not inline.strip():
        problems.append(f"{where}: no instructions (set instructions or instructions_file)")
        return ""
    return inline.strip()


def parse_agents(data: dict[str, Any], source: Path) -> AgentSet:
    """Build and validate an :class:`AgentSet` from parsed TOML; relative paths are relative to ``source``."""
    base = source.parent
    problems: list[str] = []
    warnings: list[str] = []
    for key in sorted(set(data) - TOP_KEYS):
        problems.append(f"unknown top-level key {key!r}")
    timeout = data.get("tool_timeout_s", DEFAULT_TIMEOUT_S)
    if not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout <= 0:
        problems.append("tool_timeout_s must be a positive number")
        timeout = DEFAULT_TIMEOUT_S
    voice = _str(data.get("voice"), "voice", problems)
    default_lang = _str(data.get("transcription_language"), "transcription_language", problems)
    model = _str(data.get("transcription_model"), "transcription_model", problems) or DEFAULT_TRANSCRIPTION_MODEL
    start = _str(data.get("start"), "start", problems)
    raw_agents = data.get("agents")
    if not isinstance(raw_agents, list) or not raw_agents or not all(isinstance(a, dict) for a in raw_agents):
        problems.append("no agents: add at least one [[agents]] table")
        raw_agents = []

    agents: dict[str, Agent] = {}
    pending_handoffs: list[tuple[str, str, list[str]]] = []
    for i, raw in enumerate(raw_agents, 1):
        name = _str(raw.get("name"), f"agent #{i}: name", problems)
        where = f"agent {name!r}" if name else f"agent #{i}"
        if name is None:
            problems.append(f"agent #{i}: missing name")
        elif not NAME_RE.match(name):
            problems.append(f"{where}: name must be 1-50 letters, digits, '_' or '-'")
        elif name in agents:
            problems.append(f"duplicate agent name {name!r}")
        for key in sorted(set(raw) - AGENT_KEYS):
            problems.append(f"{where}: unknown key {key!r}")
        instructions = _instructions(raw, where, base, problems)
        tools: list[Tool] = []
        for ref in _str_list(raw.get("tools"), f"{where}: tools", problems):
            try:
                tool = load_tool(ref, search=base, timeout_s=float(timeout))
            except ToolError as exc:
                problems.append(f"{where}: {exc}")
                continue
            if tool.name.startswith(HANDOFF_PREFIX):
                problems.append(f"{where}: tool {tool.name!r} clashes with handoff tool names ({HANDOFF_PREFIX}*)")
            elif any(t.name == tool.name for t in tools):
                problems.append(f"{where}: two tools named {tool.name!r}")
            else:
                tools.append(tool)
        handoffs = _str_list(raw.get("handoffs"), f"{where}: handoffs", problems)
        agent_voice = _str(raw.get("voice"), f"{where}: voice", problems)
        lang = _str(raw.get("transcription_language"), f"{where}: transcription_language", problems)
        if name and NAME_RE.match(name) and name not in agents:
            agents[name] = Agent(
                name=name,
                instructions=instructions,
                description=_str(raw.get("description"), f"{where}: description", problems) or "",
                tools=tuple(tools),
                handoffs=tuple(dict.fromkeys(handoffs)),
                voice=agent_voice,
                transcription_language=lang or default_lang,
            )
            pending_handoffs.append((name, where, handoffs))

    for name, where, targets in pending_handoffs:
        for target in targets:
            if target == name:
                problems.append(f"{where}: hands off to itself")
            elif target not in agents:
                problems.append(f"{where}: unknown handoff target {target!r}")
    if start is None and "start" not in data:
        problems.append('missing start agent: add start = "<agent name>"')
    elif start is not None and start not in agents and raw_agents:
        problems.append(f"unknown start agent {start!r}")
    if problems:
        raise _problem_list(problems, source)

    assert start is not None
    session_voice = voice or agents[start].voice
    for agent in agents.values():
        if agent.voice and session_voice and agent.voice != session_voice:
            warnings.append(
                f"agent {agent.name!r}: voice {agent.voice!r} is ignored; the session keeps {session_voice!r} "
                "(a Realtime session cannot change voice after its first audio)"
            )
    for w in warnings:
        log.warning("%s", w)
    return AgentSet(agents, start, session_voice, model, source, tuple(warnings))


def load_agents(path: str | Path) -> AgentSet:
    """Read and validate an agents file; raises one :class:`ConfigError` listing every problem."""
    source = Path(path)
    try:
        raw = source.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read agents file {source}: {exc.strerror or exc}") from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"agents file {source} is not valid TOML: {exc}") from exc
    return parse_agents(data, source)
