"""Function tools: Python callables named ``module:function``, their JSON schema, and running them safely.

The schema comes from the type hints (the Realtime API wants ``{"type":"function","name","description",
"parameters"}``, PROTOCOL.md 4.6): ``str/int/float/bool``, ``Literal[...]`` -> ``enum``, ``list[X]`` ->
``array``, ``X | None`` -> nullable, a default -> not required, ``Annotated[X, "text"]`` -> the
parameter's description; the docstring's first line is the tool's description.

A tool never crashes a session: an exception, a timeout or bad arguments become the tool output
``{"error": "..."}`` for the model to read, and are logged.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import inspect
import json
import logging
import sys
import time
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 10.0
MAX_OUTPUT_CHARS = 16_000  # keep a runaway tool from flooding the model's context


class ToolError(Exception):
    """A tool cannot be loaded or described (becomes one line of a ConfigError)."""


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]
    fn: Callable[..., Any]
    timeout_s: float = DEFAULT_TIMEOUT_S

    def definition(self) -> dict[str, Any]:
        """The ``session.tools`` entry (``RealtimeFunctionTool``)."""
        return {"type": "function", "name": self.name, "description": self.description, "parameters": self.parameters}


@dataclass(frozen=True)
class ToolResult:
    output: str  # the JSON string sent back as ``function_call_output.output``
    ok: bool
    duration_ms: float


# ---- schema from type hints --------------------------------------------------------------------------

_SCALARS: dict[Any, str] = {str: "string", int: "integer", float: "number", bool: "boolean"}


def _schema(tp: Any, where: str) -> dict[str, Any]:
    """JSON schema of one annotation; raises ToolError for what we cannot describe."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Annotated:
        out = _schema(args[0], where)
        notes = [a for a in args[1:] if isinstance(a, str)]
        if notes:
            out["description"] = " ".join(notes)
        return out
    if tp in _SCALARS:
        return {"type": _SCALARS[tp]}
    if origin is Literal:
        kinds = {type(a) for a in args}
        out = {"enum": list(args)}
        if len(kinds) == 1 and next(iter(kinds)) in _SCALARS:
            out["type"] = _SCALARS[next(iter(kinds))]
        return out
    if origin in (list, tuple, set, frozenset) or tp in (list, tuple):
        item = args[0] if args else str
        return {"type": "array", "items": _schema(item, where)}
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1 and len(rest) < len(args):
            inner = _schema(rest[0], where)
            if "type" in inner and isinstance(inner["type"], str):
                inner["type"] = [inner["type"], "null"]
            return inner
        return {"anyOf": [_schema(a, where) if a is not type(None) else {"type": "null"} for a in args]}
    if tp is dict or origin is dict:
        return {"type": "object"}
    raise ToolError(f"{where}: cannot describe type {tp!r} (use str, int, float, bool, Literal, list, Optional)")


def parameters_schema(fn: Callable[..., Any], name: str) -> dict[str, Any]:
    """The ``parameters`` object of a function's tool definition."""
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception as exc:  # NameError for unresolvable forward refs, among others
        raise ToolError(f"tool {name}: cannot read its type hints: {exc}") from exc
    props: dict[str, Any] = {}
    required: list[str] = []
    for pname, param in inspect.signature(fn).parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if pname not in hints:
            raise ToolError(f"tool {name}: parameter {pname!r} has no type hint")
        props[pname] = _schema(hints[pname], f"tool {name}, parameter {pname!r}")
        if param.default is inspect.Parameter.empty:
            required.append(pname)
        elif param.default is not None:
            props[pname]["default"] = param.default
    return {"type": "object", "properties": props, "required": required, "additionalProperties": False}


def description_of(fn: Callable[..., Any]) -> str:
    doc = inspect.getdoc(fn) or ""
    return doc.strip().splitlines()[0].strip() if doc.strip() else ""


def make_tool(fn: Callable[..., Any], name: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S) -> Tool:
    """Describe a callable as a tool (its ``__name__`` unless ``name`` is given)."""
    tool_name = name or fn.__name__
    return Tool(tool_name, description_of(fn), parameters_schema(fn, tool_name), fn, timeout_s)


# ---- loading by "module:function" ---------------------------------------------------------------------


def _import_module(module: str, search: Path | None) -> types.ModuleType:
    """``importlib.import_module``, falling back to ``<search>/<module as path>.py`` (next to the agents file)."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if search is None or not (exc.name and module.startswith(exc.name)):
            raise
        path = search.joinpath(*module.split(".")).with_suffix(".py")
        if not path.is_file():
            raise
    key = f"bridge_agents_tools.{module}"
    if key in sys.modules:
        return sys.modules[key]
    spec = importlib.util.spec_from_file_location(key, path)
    if spec is None or spec.loader is None:
        raise ToolError(f"cannot load {path}")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[key] = mod
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        del sys.modules[key]
        raise
    return mod


def load_tool(ref: str, search: Path | None = None, timeout_s: float = DEFAULT_TIMEOUT_S) -> Tool:
    """Resolve ``module:function`` (or ``module:Class.method``) to a :class:`Tool`; raises ToolError."""
    module, sep, attr = ref.partition(":")
    if not sep or not module or not attr:
        raise ToolError(f"tool {ref!r}: expected 'module:function'")
    try:
        obj: Any = _import_module(module, search)
    except Exception as exc:
        raise ToolError(f"tool {ref!r}: cannot import {module}: {exc.__class__.__name__}: {exc}") from exc
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ToolError(f"tool {ref!r}: {module} has no {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ToolError(f"tool {ref!r}: {attr!r} is not callable")
    return make_tool(obj, name=attr.rsplit(".", 1)[-1], timeout_s=timeout_s)


# ---- running ------------------------------------------------------------------------------------------


def _encode(value: Any) -> str:
    """A tool's return value as the output string: str as is, everything else as JSON."""
    if isinstance(value, str):
        text = value
    else:
        try:
            text = json.dumps(value, ensure_ascii=False, default=str)
        except (TypeError, ValueError):
            text = json.dumps({"result": repr(value)})
    if len(text) > MAX_OUTPUT_CHARS:
        text = text[:MAX_OUTPUT_CHARS]
    return text


def _error(message: str) -> str:
    return json.dumps({"error": message}, ensure_ascii=False)


async def run_tool(tool: Tool, arguments: str, clock: Callable[[], float] = time.monotonic) -> ToolResult:
    """Call ``tool`` with the model's JSON ``arguments``; never raises (except CancelledError)."""
    t0 = clock()

    def done(output: str, ok: bool) -> ToolResult:
        return ToolResult(output, ok, round((clock() - t0) * 1000, 1))

    try:
        args = json.loads(arguments or "{}")
    except json.JSONDecodeError as exc:
        log.warning("tool %s: arguments are not JSON: %s", tool.name, exc)
        return done(_error(f"arguments are not valid JSON: {exc.msg}"), False)
    if not isinstance(args, dict):
        return done(_error("arguments must be a JSON object"), False)
    try:
        inspect.signature(tool.fn).bind(**args)
    except TypeError as exc:
        log.warning("tool %s: bad arguments: %s", tool.name, exc)
        return done(_error(f"bad arguments: {exc}"), False)
    try:
        async with asyncio.timeout(tool.timeout_s):
            if inspect.iscoroutinefunction(tool.fn):
                value = await tool.fn(**args)
            else:
                # A blocking tool must not stall the audio event loop: run it in a worker thread.
                value = await asyncio.to_thread(tool.fn, **args)
    except TimeoutError:
        log.warning("tool %s timed out after %.1f s", tool.name, tool.timeout_s)
        return done(_error(f"tool {tool.name} timed out after {tool.timeout_s:g} s"), False)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.warning("tool %s failed: %s: %s", tool.name, exc.__class__.__name__, exc, exc_info=True)
        return done(_error(f"{exc.__class__.__name__}: {exc}"), False)
    return done(_encode(value), True)
