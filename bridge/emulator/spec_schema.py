"""Derive ``client_schema.json`` (what the emulator validates client input against) from the official spec.

``python -m bridge.emulator.spec_schema ../shared/openai-spec/openapi.json > bridge/emulator/client_schema.json``

The file holds the schemas reachable from the 11 client events, the client-secret request and both session
requests (openai/openai-openapi @ f85dbe22, PROTOCOL.md 8), with documentation keys dropped and ``$ref``
shortened to the schema name. :data:`OVERLAY` adds the bounds the real service enforces that the schema only
states in prose; ``tests/unit/test_emulator_validation.py`` checks the shipped file against a fresh
derivation (CI has the spec).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

ROOTS = (
    "RealtimeClientEvent",
    "RealtimeCreateClientSecretRequest",
    "RealtimeSessionCreateRequestGA",
    "RealtimeTranscriptionSessionCreateRequestGA",
)
_DROP = frozenset(
    {
        "description",
        "example",
        "examples",
        "title",
        "default",
        "format",
        "discriminator",
        "x-oaiMeta",
        "x-oaiExpandable",
        "x-oaiTypeLabel",
        "x-stainless-const",
        "x-stainless-naming",
    }
)
_NULLABLE = re.compile(r"\bnull\b")  # "can be set to `null` to turn off", "Set to null to disable tracing"
VOICES = ("alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar")
# (schema, property path) -> keys to set: bounds the spec gives only in prose, as the service enforces them.
OVERLAY: dict[tuple[str, str], dict[str, Any]] = {
    # "Maximum number of output tokens ... between 1 and 4096 ... or inf" (both request schemas' descriptions)
    ("RealtimeSessionCreateRequestGA", "properties/max_output_tokens/oneOf/0"): {"minimum": 1, "maximum": 4096},
    ("RealtimeResponseCreateParams", "properties/max_output_tokens/oneOf/0"): {"minimum": 1, "maximum": 4096},
    # "Activation threshold for VAD (0.0 to 1.0)"
    ("RealtimeTurnDetection", "anyOf/0/oneOf/0/properties/threshold"): {"minimum": 0, "maximum": 1},
    # the schema also allows any string; the service refuses other names: "Invalid value: 'fable'. Supported
    # values are: 'alloy', ..., 'marin', and 'cedar'." (docs/protocol-notes.md "Validation errors")
    ("VoiceIdsShared", "anyOf/0"): {"enum": list(VOICES)},
    # the schema says enum [24000]; the service answers 16000 with integer_below_min_value (PROTOCOL.md 3)
    ("RealtimeAudioFormats", "anyOf/0/properties/rate"): {"enum": None, "minimum": 24000, "maximum": 24000},
}


def _strip(node: Any, schemas: dict[str, Any], out: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_strip(v, schemas, out) for v in node]
    if not isinstance(node, dict):
        return node
    result: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP:
            continue
        if key == "$ref":
            name = value.rsplit("/", 1)[1]
            _add(name, schemas, out)
            result[key] = name
        elif key == "properties":
            result[key] = {p: _property(s, schemas, out) for p, s in value.items()}
        else:
            result[key] = _strip(value, schemas, out)
    return result


def _property(node: Any, schemas: dict[str, Any], out: dict[str, Any]) -> Any:
    """A property's schema; one whose description says it "can be set to null" accepts null."""
    stripped = _strip(node, schemas, out)
    if isinstance(node, dict) and _NULLABLE.search(node.get("description") or ""):
        stripped["nullable"] = True
    return stripped


def _add(name: str, schemas: dict[str, Any], out: dict[str, Any]) -> None:
    if name not in out:
        out[name] = None  # placeholder: breaks reference cycles
        out[name] = _strip(schemas[name], schemas, out)


def _apply_overlay(out: dict[str, Any]) -> None:
    for (name, path), keys in OVERLAY.items():
        node = out[name]
        for step in path.split("/"):
            node = node[int(step)] if isinstance(node, list) else node[step]
        for key, value in keys.items():
            if value is None:
                node.pop(key, None)
            else:
                node[key] = value


def derive(spec: dict[str, Any]) -> dict[str, Any]:
    schemas = spec["components"]["schemas"]
    out: dict[str, Any] = {}
    for root in ROOTS:
        _add(root, schemas, out)
    _apply_overlay(out)
    return dict(sorted(out.items()))


def render(spec_path: Path) -> str:
    return json.dumps(derive(json.loads(spec_path.read_text(encoding="utf-8"))), indent=1, sort_keys=True) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m bridge.emulator.spec_schema PATH/openapi.json", file=sys.stderr)
        return 2
    sys.stdout.write(render(Path(argv[0])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
