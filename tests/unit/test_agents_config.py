"""Agents file loading and validation: every problem is named, all at once, in one ConfigError."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.agents import load_agents
from bridge.agents.config import HANDOFF_NOTE
from bridge.errors import ConfigError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "agents"


def write(tmp_path: Path, text: str, name: str = "agents.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_agents(write(tmp_path, text))
    lines = str(info.value).splitlines()
    assert "problem" in lines[0]
    return [line.strip().removeprefix("- ") for line in lines[1:]]


def test_shipped_examples_load() -> None:
    korean = load_agents(EXAMPLES / "korean" / "agents.toml")
    assert list(korean.agents) == ["triage", "korean_20s", "empathetic"]
    assert korean.start == "triage"
    assert korean.agents["empathetic"].transcription_language == "ko"
    empathetic = korean.instructions_for("empathetic")
    for needle in ("109", "112", "119", "not a therapist", "local emergency number"):
        assert needle.lower() in empathetic.lower()
    assert empathetic.endswith(HANDOFF_NOTE)
    names = [t["name"] for t in korean.tools_for("empathetic")]
    assert names == ["record_emotion_score", "crisis_resources", "transfer_to_korean_20s", "transfer_to_triage"]
    weather = load_agents(EXAMPLES / "weather" / "agents.toml")
    assert [t["name"] for t in weather.tools_for("weather")] == ["get_weather", "transfer_to_front_desk"]


def test_every_problem_is_reported_together(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """
start = "nobody"
colour = "blue"

[[agents]]
name = "a"
instructions = "hi"
handoffs = ["b", "ghost"]
tools = ["bridge.agents.builtin_tools:nope", "no_such_module_xyz:f", "bad-ref"]

[[agents]]
name = "a"
instructions = "dup"

[[agents]]
name = "b"
instructions_file = "missing.md"
handoffs = ["b"]

[[agents]]
instructions = "nameless"
""",
    )
    assert "unknown top-level key 'colour'" in found
    assert "duplicate agent name 'a'" in found
    assert "agent 'a': unknown handoff target 'ghost'" in found
    assert "agent 'b': hands off to itself" in found
    assert "unknown start agent 'nobody'" in found
    assert "agent #4: missing name" in found
    assert any(p.startswith("agent 'b': cannot read instructions_file 'missing.md'") for p in found)
    assert any("bridge.agents.builtin_tools has no 'nope'" in p for p in found)
    assert any("cannot import no_such_module_xyz" in p for p in found)
    assert any("'bad-ref': expected 'module:function'" in p for p in found)
    assert len(found) == 10, found


def test_missing_start_and_no_agents(tmp_path: Path) -> None:
    assert problems(tmp_path, "") == [
        "no agents: add at least one [[agents]] table",
        'missing start agent: add start = "<agent name>"',
    ]


def test_instructions_both_or_neither(tmp_path: Path) -> None:
    (tmp_path / "x.md").write_text("from file", encoding="utf-8")
    found = problems(
        tmp_path,
        """
start = "a"
[[agents]]
name = "a"
instructions = "inline"
instructions_file = "x.md"
[[agents]]
name = "b"
""",
    )
    assert found == [
        "agent 'a': give instructions or instructions_file, not both",
        "agent 'b': no instructions (set instructions or instructions_file)",
    ]


def test_cycles_allowed_and_files_relative_to_the_toml(tmp_path: Path) -> None:
    sub = tmp_path / "set"
    sub.mkdir()
    (sub / "a.md").write_text("Agent A here.\n", encoding="utf-8")
    (sub / "mytools.py").write_text(
        "def shout(text: str) -> str:\n    '''Say it louder.'''\n    return text.upper()\n", encoding="utf-8"
    )
    path = write(
        sub,
        """
start = "a"
[[agents]]
name = "a"
instructions_file = "a.md"
handoffs = ["b"]
tools = ["mytools:shout"]
[[agents]]
name = "b"
instructions = "B"
handoffs = ["a"]
""",
    )
    agents = load_agents(path)
    assert agents.agents["a"].instructions == "Agent A here."
    assert agents.agents["a"].tool("shout") is not None
    assert agents.agents["b"].handoffs == ("a",)


def test_bad_toml_and_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_agents(write(tmp_path, "start = "))
    with pytest.raises(ConfigError, match="cannot read agents file"):
        load_agents(tmp_path / "nope.toml")


def test_one_voice_per_session(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
start = "a"
[[agents]]
name = "a"
instructions = "A"
voice = "marin"
handoffs = ["b"]
[[agents]]
name = "b"
instructions = "B"
voice = "cedar"
""",
    )
    agents = load_agents(path)
    assert agents.voice == "marin"
    assert any("voice 'cedar' is ignored" in w for w in agents.warnings)
    base = {
        "type": "realtime",
        "model": "gpt-realtime",
        "instructions": "x",
        "audio": {"input": {"turn_detection": {"type": "server_vad"}}, "output": {"voice": "alloy"}},
    }
    cfg = agents.session_config(base)
    assert cfg["audio"]["output"]["voice"] == "marin"
    assert cfg["audio"]["input"]["turn_detection"] == {"type": "server_vad"}
    assert cfg["instructions"].startswith("A")
    assert [t["name"] for t in cfg["tools"]] == ["transfer_to_b"]
    assert base["audio"]["output"]["voice"] == "alloy"  # the caller's dict is not modified
    # a handoff never carries the voice or any audio format
    assert "audio" not in agents.agent_fields("b")
