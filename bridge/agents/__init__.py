"""Declarative voice agents: an agents file (TOML), function tools, and handoffs between agents.

- :func:`load_agents` reads and validates a file into an :class:`AgentSet`;
- :class:`AgentController` is the runtime's function-call hook: it runs tools and performs handoffs;
- :mod:`bridge.agents.sideband` attaches the same controller to a browser call over the sideband WS.

See ``docs/agents.md``.
"""

from bridge.agents.config import Agent, AgentSet, load_agents, parse_agents
from bridge.agents.controller import AgentController, Handoff
from bridge.agents.tools import Tool, ToolResult, load_tool, make_tool, run_tool

__all__ = [
    "Agent",
    "AgentController",
    "AgentSet",
    "Handoff",
    "Tool",
    "ToolResult",
    "load_agents",
    "load_tool",
    "make_tool",
    "parse_agents",
    "run_tool",
]
