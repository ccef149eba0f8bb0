"""Client input checked against the official schema, answered with the real service's codes and wording.

The schema is ``client_schema.json`` (derived from the spec by ``bridge.emulator.spec_schema``). Codes and
message patterns are the OpenAI API's own (docs/protocol-notes.md "Validation errors"):

- ``invalid_type``: "Invalid type for 'session.instructions': expected a string, but got an integer instead."
- ``invalid_value``: "Invalid value: 'x'. Supported values are: 'a', 'b', and 'c'."
- ``missing_required_parameter``: "Missing required parameter: 'item.type'."
- ``unknown_parameter``: "Unknown parameter: 'session.bogus_field'."
- ``integer_below_min_value`` (``..._above_max_value``, ``decimal_...``): "Invalid 'x': integer below minimum value.
  Expected a value >= 1, but got 0 instead."
- ``string_above_max_length``: "Invalid 'event_id': string too long. Expected a string with maximum length 512,
  but got a string with length 513 instead."

An object with ``properties`` is closed (unknown keys are refused, as the service does); one without is open
(``metadata``, a tool's ``parameters``). ``anyOf``/``oneOf`` over objects are picked by their ``type`` (then
``role``) value, so the error names the field that is wrong instead of "matched no alternative".
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

from bridge.emulator.engine_parts import ClientError

Schema = dict[str, Any]
_DISCRIMINATORS = ("type", "role")
_JSON_TYPES = {
    "string": "a string",
    "integer": "an integer",
    "number": "a decimal",
    "boolean": "a boolean",
    "object": "an object",
    "array": "an array",
    "null": "null",
}


@functools.cache
def schemas() -> dict[str, Schema]:
    text = resources.files("bridge.emulator").joinpath("client_schema.json").read_text(encoding="utf-8")
    loaded: dict[str, Schema] = json.loads(text)
    return loaded


def _resolve(schema: Schema) -> Schema:
    while "$ref" in schema:
        schema = schemas()[schema["$ref"]]
    return schema


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _matches_type(value: Any, wanted: str) -> bool:
    got = json_type(value)
    return got == wanted or (wanted == "number" and got == "integer")


def _quote(value: Any) -> str:
    return f"'{value}'"


def one_of(words: list[str]) -> str:
    """'a', 'b', and 'c' (the service's list style)."""
    if len(words) <= 1:
        return "".join(words)
    if len(words) == 2:
        return f"{words[0]} and {words[1]}"
    return ", ".join(words[:-1]) + f", and {words[-1]}"


def _or(words: list[str]) -> str:
    if len(words) == 2:
        return f"{words[0]} or {words[1]}"
    return ", ".join(words[:-1]) + f", or {words[-1]}"


def _child(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def invalid_type(path: str, expected: str, value: Any) -> ClientError:
    got = _JSON_TYPES[json_type(value)]
    tail = "null" if value is None else f"{got} instead"
    return ClientError("invalid_type", f"Invalid type for '{path}': expected {expected}, but got {tail}.", path)


def invalid_value(path: str, value: Any, allowed: list[Any]) -> ClientError:
    supported = one_of([_quote(v) for v in allowed])
    return ClientError("invalid_value", f"Invalid value: '{value}'. Supported values are: {supported}.", path)


def _leaves(schema: Schema) -> list[str]:
    schema = _resolve(schema)
    alts = schema.get("anyOf") or schema.get("oneOf")
    if alts:
        return [leaf for a in alts for leaf in _leaves(a)]
    if "enum" in schema:
        return [_quote(v) for v in schema["enum"]]
    if "const" in schema:
        return [_quote(schema["const"])]
    return [_JSON_TYPES.get(str(schema.get("type")), "a value")]


def _describe(schema: Schema) -> str:
    """How the service names what a schema accepts: "a string", "one of an integer or 'inf'"."""
    leaves = list(dict.fromkeys(_leaves(schema)))
    if "a string" in leaves:  # "a string" already covers the string constants
        leaves = [w for w in leaves if not w.startswith("'")]
    return leaves[0] if len(leaves) == 1 else "one of " + _or(leaves)


def _check_bounds(schema: Schema, value: Any, path: str) -> None:
    kind = "integer" if schema.get("type") == "integer" else "decimal"
    low, high = schema.get("minimum"), schema.get("maximum")
    if low is not None and value < low:
        raise ClientError(
            f"{kind}_below_min_value",
            f"Invalid '{path}': {kind} below minimum value. Expected a value >= {low}, but got {value} instead.",
            path,
        )
    if high is not None and value > high:
        raise ClientError(
            f"{kind}_above_max_value",
            f"Invalid '{path}': {kind} above maximum value. Expected a value <= {high}, but got {value} instead.",
            path,
        )


def _check_lengths(schema: Schema, value: Any, path: str) -> None:
    if isinstance(value, str) and "maxLength" in schema and len(value) > schema["maxLength"]:
        raise ClientError(
            "string_above_max_length",
            f"Invalid '{path}': string too long. Expected a string with maximum length {schema['maxLength']}, "
            f"but got a string with length {len(value)} instead.",
            path,
        )
    if isinstance(value, list) and "minItems" in schema and len(value) < schema["minItems"]:
        raise ClientError(
            "array_below_min_length",
            f"Invalid '{path}': array too short. Expected an array with minimum length {schema['minItems']}, "
            f"but got an array with length {len(value)} instead.",
            path,
        )


def _discriminated(alts: list[Schema], value: dict[str, Any], path: str) -> Schema | None:
    """The alternative ``value``'s ``type``/``role`` selects, or None when the alternatives are not tagged."""
    candidates = alts
    for key in _DISCRIMINATORS:
        tags = [_tag_values(a, key) for a in candidates]
        if any(t is None for t in tags):
            continue
        if key not in value:
            if all(key in a.get("required", ()) for a in candidates):
                raise ClientError("missing_required_parameter", f"Missing required parameter: '{_child(path, key)}'.",
                                  _child(path, key))  # fmt: skip
            continue
        chosen = [a for a, t in zip(candidates, tags, strict=True) if t is not None and value[key] in t]
        if not chosen:
            if not isinstance(value[key], str):
                raise invalid_type(_child(path, key), "a string", value[key])
            allowed = list(dict.fromkeys(v for t in tags if t for v in t))
            raise invalid_value(_child(path, key), value[key], allowed)
        candidates = chosen
        if len(candidates) == 1:
            return candidates[0]
    return candidates[0] if len(candidates) < len(alts) else None


def _tag_values(schema: Schema, key: str) -> list[Any] | None:
    prop = (schema.get("properties") or {}).get(key)
    if not isinstance(prop, dict):
        return None
    prop = _resolve(prop)
    if "enum" in prop:
        return list(prop["enum"])
    if "const" in prop:
        return [prop["const"]]
    return None


def _check_alternatives(schema: Schema, value: Any, path: str) -> None:
    alts = [_resolve(a) for a in (schema.get("anyOf") or schema.get("oneOf") or [])]
    if isinstance(value, dict):
        objects = [a for a in alts if a.get("type") == "object" and "properties" in a]
        if len(objects) > 1:
            chosen = _discriminated(objects, value, path)
            if chosen is not None:
                validate(chosen, value, path)
                return
    first_error: ClientError | None = None
    for alt in alts:
        try:
            validate(alt, value, path)
            return
        except ClientError as err:
            if first_error is None and _type_fits(alt, value):
                first_error = err
    if first_error is not None:
        raise first_error
    raise invalid_type(path, _describe(schema), value)


def _type_fits(schema: Schema, value: Any) -> bool:
    schema = _resolve(schema)
    if "type" in schema:
        return _matches_type(value, schema["type"])
    alts: list[Schema] = schema.get("anyOf") or schema.get("oneOf") or []
    return any(_type_fits(a, value) for a in alts)


def _check_object(schema: Schema, value: dict[str, Any], path: str) -> None:
    props: dict[str, Schema] = schema.get("properties") or {}
    extra = schema.get("additionalProperties")
    for key, child in value.items():
        where = _child(path, key)
        if key in props:
            validate(props[key], child, where)
        elif isinstance(extra, dict):
            validate(extra, child, where)
        elif props and extra is not True:
            raise ClientError("unknown_parameter", f"Unknown parameter: '{where}'.", where)
    for key in schema.get("required", ()):
        if key not in value:
            where = _child(path, key)
            raise ClientError("missing_required_parameter", f"Missing required parameter: '{where}'.", where)


def validate(schema: Schema, value: Any, path: str = "") -> None:
    """Raise :class:`ClientError` (the service's code, message and ``param``) unless ``value`` fits."""
    if value is None and schema.get("nullable"):  # before resolving: "nullable" sits beside a "$ref"
        return
    schema = _resolve(schema)
    if value is None and schema.get("nullable"):
        return
    if "anyOf" in schema or "oneOf" in schema:
        _check_alternatives(schema, value, path)
        return
    wanted: str | None = schema.get("type")
    if wanted is not None and not _matches_type(value, wanted):
        if "enum" in schema and wanted == "string" and value is not None:
            raise invalid_type(path, _describe(schema), value)
        raise invalid_type(path, _JSON_TYPES.get(wanted, "a value"), value)
    if "enum" in schema and value not in schema["enum"]:
        raise invalid_value(path, value, list(schema["enum"]))
    if "const" in schema and value != schema["const"]:
        raise invalid_value(path, value, [schema["const"]])
    if isinstance(value, int | float) and not isinstance(value, bool):
        _check_bounds(schema, value, path)
    _check_lengths(schema, value, path)
    if isinstance(value, dict):
        _check_object(schema, value, path)
    elif isinstance(value, list) and "items" in schema:
        for n, item in enumerate(value):
            validate(schema["items"], item, f"{path}[{n}]")


def validate_named(name: str, value: Any, path: str = "") -> None:
    """:func:`validate` against the schema called ``name`` (e.g. ``RealtimeCreateClientSecretRequest``)."""
    validate(schemas()[name], value, path)
