"""Tool schemas from type hints, and running tools: results, exceptions, timeouts, bad arguments."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Literal

import jsonschema
import pytest

from bridge.agents.tools import ToolError, load_tool, make_tool, run_tool


def everything(
    name: Annotated[str, "who"],
    count: int,
    ratio: float,
    flag: bool,
    mode: Literal["a", "b"],
    tags: list[str],
    maybe: int | None = None,
    level: int = 3,
) -> str:
    """Do everything.

    More text that is not part of the description.
    """
    return name


def test_schema_from_type_hints() -> None:
    tool = make_tool(everything)
    d = tool.definition()
    assert d["type"] == "function" and d["name"] == "everything"
    assert d["description"] == "Do everything."
    p = d["parameters"]
    assert p["required"] == ["name", "count", "ratio", "flag", "mode", "tags"]
    assert p["properties"]["name"] == {"type": "string", "description": "who"}
    assert p["properties"]["count"] == {"type": "integer"}
    assert p["properties"]["ratio"] == {"type": "number"}
    assert p["properties"]["flag"] == {"type": "boolean"}
    assert p["properties"]["mode"] == {"enum": ["a", "b"], "type": "string"}
    assert p["properties"]["tags"] == {"type": "array", "items": {"type": "string"}}
    assert p["properties"]["maybe"] == {"type": ["integer", "null"]}
    assert p["properties"]["level"] == {"type": "integer", "default": 3}
    jsonschema.Draft202012Validator.check_schema(p)
    jsonschema.validate({"name": "x", "count": 1, "ratio": 0.5, "flag": True, "mode": "a", "tags": []}, p)


def test_undescribable_parameters_are_errors() -> None:
    def no_hint(x):  # type: ignore[no-untyped-def]
        return x

    def weird(x: complex) -> None:
        return None

    with pytest.raises(ToolError, match="no type hint"):
        make_tool(no_hint)
    with pytest.raises(ToolError, match="cannot describe type"):
        make_tool(weird)


def test_load_tool_by_reference() -> None:
    tool = load_tool("bridge.agents.builtin_tools:get_weather")
    assert tool.name == "get_weather"
    assert tool.parameters["required"] == ["city"]
    with pytest.raises(ToolError, match="has no 'nothing'"):
        load_tool("bridge.agents.builtin_tools:nothing")
    with pytest.raises(ToolError, match="cannot import"):
        load_tool("definitely_not_a_module_abc:f")


async def test_sync_and_async_results() -> None:
    weather = load_tool("bridge.agents.builtin_tools:get_weather")
    r1 = await run_tool(weather, json.dumps({"city": "Seoul"}))
    r2 = await run_tool(weather, json.dumps({"city": "Seoul"}))
    assert r1.ok and r1.output == r2.output  # deterministic
    assert json.loads(r1.output)["city"] == "Seoul"

    async def add(a: int, b: int) -> int:
        """Add."""
        await asyncio.sleep(0)
        return a + b

    r = await run_tool(make_tool(add), '{"a": 2, "b": 3}')
    assert r.ok and r.output == "5" and r.duration_ms >= 0


async def test_exception_becomes_error_output(caplog: pytest.LogCaptureFixture) -> None:
    def boom(x: int) -> int:
        """Fail."""
        raise RuntimeError("it broke")

    r = await run_tool(make_tool(boom), '{"x": 1}')
    assert not r.ok
    assert json.loads(r.output) == {"error": "RuntimeError: it broke"}
    assert "boom failed" in caplog.text


async def test_timeout_becomes_error_output() -> None:
    async def slow() -> str:
        """Slow."""
        await asyncio.sleep(10)
        return "never"

    r = await run_tool(make_tool(slow, timeout_s=0.05), "{}")
    assert not r.ok
    assert json.loads(r.output) == {"error": "tool slow timed out after 0.05 s"}
    assert 40 <= r.duration_ms < 1000


async def test_bad_arguments_become_error_output() -> None:
    tool = load_tool("bridge.agents.builtin_tools:get_weather")
    r = await run_tool(tool, "{not json")
    assert not r.ok and "not valid JSON" in json.loads(r.output)["error"]
    r = await run_tool(tool, '{"town": "Seoul"}')
    assert not r.ok and "bad arguments" in json.loads(r.output)["error"]
    r = await run_tool(tool, "[1]")
    assert not r.ok
    emotion = load_tool("bridge.agents.builtin_tools:record_emotion_score")
    r = await run_tool(emotion, '{"emotion": "sad", "score": 140}')
    assert not r.ok and "between 0 and 100" in r.output
