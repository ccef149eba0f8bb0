"""Independent oracles for server events: the official SDK's pydantic union and the OpenAPI spec.

Kept out of the ``bridge`` package on purpose: the emulator must not ship its own judge.
The spec lives in ``../shared/openai-spec/openapi.json`` (or ``$BRIDGE_SHARED_DIR/openai-spec``); where
it is absent (a user's clone) the ``spec`` tests skip with a reason, CI must not let them skip.
"""

from __future__ import annotations

import copy
import functools
import json
import os
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_dir() -> Path | None:
    candidates = []
    if os.environ.get("BRIDGE_SHARED_DIR"):
        candidates.append(Path(os.environ["BRIDGE_SHARED_DIR"]))
    candidates += [Path("/work/shared"), REPO.parent / "shared"]
    for c in candidates:
        if (c / "openai-spec" / "openapi.json").is_file():
            return c
    return None


def require_spec() -> Path:
    found = shared_dir()
    if found is None:
        pytest.skip("openai-spec not found (set BRIDGE_SHARED_DIR or clone next to ../shared); CI must provide it")
    return found / "openai-spec" / "openapi.json"


def _nullable(schema: Any) -> Any:
    """Patch 'optional => nullable' into every object schema (PROTOCOL.md 8: the spec's nullability is wrong)."""
    if isinstance(schema, list):
        return [_nullable(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _nullable(v) for k, v in schema.items()}
    props = out.get("properties")
    if isinstance(props, dict):
        required = set(out.get("required", []))
        for name, sub in list(props.items()):
            if name not in required:
                props[name] = {"anyOf": [sub, {"type": "null"}]}
    return out


@functools.lru_cache(maxsize=1)
def _spec_validators(path: str) -> tuple[Any, dict[str, Any]]:
    """The union validator, plus one validator per event type (precise error messages)."""
    import jsonschema
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    spec = _nullable(json.loads(Path(path).read_text()))
    resource = Resource.from_contents(spec, default_specification=DRAFT202012)
    registry = Registry().with_resource("urn:spec", resource)
    union = jsonschema.Draft202012Validator(
        {"$ref": "urn:spec#/components/schemas/RealtimeServerEvent"}, registry=registry
    )
    by_type = {}
    schemas = spec["components"]["schemas"]
    union_schema = schemas["RealtimeServerEvent"]
    for member in union_schema.get("oneOf") or union_schema["anyOf"]:
        ref = member["$ref"]
        props = schemas[ref.rsplit("/", 1)[1]]["properties"]
        type_schema = props["type"]
        for alt in type_schema.get("anyOf", [type_schema]):
            for name in alt.get("enum", []):
                by_type[name] = jsonschema.Draft202012Validator({"$ref": "urn:spec" + ref}, registry=registry)
    return union, by_type


@functools.lru_cache(maxsize=1)
def _sdk_adapters() -> dict[str, Any]:
    """Type string -> TypeAdapter of the SDK class for that event (the union itself is not discriminated)."""
    import typing

    import pydantic
    from openai.types.realtime import RealtimeServerEvent

    out = {}
    for cls in typing.get_args(typing.get_args(RealtimeServerEvent)[0]):
        for literal in typing.get_args(cls.model_fields["type"].annotation):
            out[literal] = pydantic.TypeAdapter(cls)
    return out


def _with_fake_audio(event: dict[str, Any]) -> dict[str, Any]:
    """Logged events carry audio as byte counts; put a base64 string back so types validate."""
    event = copy.deepcopy(event)

    def fix(node: Any, etype: str | None) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("audio", "delta") and isinstance(value, int) and not isinstance(value, bool):
                    node[key] = "AAAA"
                else:
                    fix(value, etype)
        elif isinstance(node, list):
            for v in node:
                fix(v, etype)

    fix(event, event.get("type"))
    return event


def check_sdk(event: dict[str, Any]) -> None:
    """Raises pydantic.ValidationError if the SDK's discriminated union rejects ``event``."""
    adapter = _sdk_adapters().get(event.get("type"))
    if adapter is None:
        raise ValueError(f"no SDK server event type {event.get('type')!r}")
    adapter.validate_python(_with_fake_audio(event))


def spec_errors(event: dict[str, Any], spec_path: Path) -> list[str]:
    union, by_type = _spec_validators(str(spec_path))
    event = _with_fake_audio(event)
    if union.is_valid(event):
        return []
    validator = by_type.get(event.get("type"), union)
    errors = sorted(validator.iter_errors(event), key=lambda e: list(e.absolute_path)) or ["union mismatch"]
    if isinstance(errors[0], str):
        return errors
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message[:300]}" for e in errors]


def assert_valid_server_events(events: list[dict[str, Any]], *, spec: bool | None = None) -> int:
    """Validate every event with the SDK union, and with the spec when available (or required: spec=True).

    Returns how many events were checked; fails listing each bad event.
    """
    spec_path = None
    if spec is True:
        spec_path = require_spec()
    elif spec is None and shared_dir() is not None:
        spec_path = shared_dir() / "openai-spec" / "openapi.json"  # type: ignore[operator]
    problems = []
    for ev in events:
        try:
            check_sdk(ev)
        except Exception as exc:  # pydantic.ValidationError
            problems.append(f"SDK rejects {ev.get('type')}: {str(exc)[:500]}\n{json.dumps(ev)[:800]}")
        if spec_path is not None:
            errs = spec_errors(ev, spec_path)
            if errs:
                problems.append(f"spec rejects {ev.get('type')}: {errs[:3]}\n{json.dumps(ev)[:800]}")
    assert not problems, "\n\n".join(problems[:10])
    return len(events)
