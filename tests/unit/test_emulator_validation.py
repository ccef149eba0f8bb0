"""The shipped client schema matches the official spec, and the validator's wording helpers."""

from __future__ import annotations

import pytest
from spec_oracle import require_spec

from bridge.emulator import spec_schema, validation
from bridge.emulator.engine_parts import ClientError


@pytest.mark.spec
def test_shipped_schema_is_derived_from_the_spec() -> None:
    shipped = (spec_schema.Path(spec_schema.__file__).parent / "client_schema.json").read_text(encoding="utf-8")
    assert shipped == spec_schema.render(require_spec()), (
        "bridge/emulator/client_schema.json is stale: python -m bridge.emulator.spec_schema PATH/openapi.json"
    )


def test_lists_read_as_the_service_writes_them() -> None:
    assert validation.one_of(["'a'"]) == "'a'"
    assert validation.one_of(["'a'", "'b'"]) == "'a' and 'b'"
    assert validation.one_of(["'a'", "'b'", "'c'"]) == "'a', 'b', and 'c'"


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0, "integer_below_min_value"), (4097, "integer_above_max_value"), ("x", "invalid_value"),
     (1.5, "invalid_type"), (None, "invalid_type")],
)  # fmt: skip
def test_max_output_tokens(value: object, expected: str) -> None:
    with pytest.raises(ClientError) as err:
        validation.validate_named("RealtimeResponseCreateParams", {"max_output_tokens": value}, "response")
    assert err.value.code == expected and err.value.param == "response.max_output_tokens"


def test_nullable_fields_named_in_the_spec_accept_null() -> None:
    session = {"type": "realtime", "tracing": None, "audio": {"input": {"transcription": None,
               "noise_reduction": None, "turn_detection": None}}}  # fmt: skip
    validation.validate_named("RealtimeSessionCreateRequestGA", session, "session")
    with pytest.raises(ClientError, match="expected an object, but got null"):
        validation.validate_named("RealtimeSessionCreateRequestGA", {"type": "realtime", "audio": None}, "session")
