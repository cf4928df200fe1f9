"""Conventions every .avsc file keeps, so the contract stays readable and evolvable."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from schemas.registry import NAMESPACE, all_schema_names, load_schema

AVRO_DIR = Path(__file__).resolve().parents[2] / "schemas" / "avro"
TIMESTAMP = {"type": "long", "logicalType": "timestamp-millis"}
EVENT_TIME_FIELDS = {"event_time", "issued_at", "requested_at", "failed_at"}


def _walk_fields(schema: Any) -> list[dict[str, Any]]:
    """Every field of every record nested in ``schema``."""
    if isinstance(schema, list):
        return [f for branch in schema for f in _walk_fields(branch)]
    if not isinstance(schema, dict):
        return []
    if schema.get("type") == "record":
        return [f for field in schema["fields"] for f in [field, *_walk_fields(field["type"])]]
    return (
        _walk_fields(schema.get("items"))
        + _walk_fields(schema.get("values"))
        + _walk_fields(schema.get("type"))
    )


def _named(schema: Any, kind: str) -> list[dict[str, Any]]:
    found = [schema] if isinstance(schema, dict) and schema.get("type") == kind else []
    return found + [t for f in _walk_fields(schema) for t in _named(f["type"], kind)]


def test_files_are_formatted_json() -> None:
    for path in [*AVRO_DIR.glob("*.avsc"), *AVRO_DIR.glob("history/*.avsc")]:
        text = path.read_text()
        assert text == json.dumps(json.loads(text), indent=2) + "\n", path


@pytest.mark.parametrize("name", all_schema_names())
def test_record_conventions(name: str) -> None:
    schema = load_schema(name)
    assert schema["name"] == name
    assert schema["namespace"] == NAMESPACE
    assert schema["doc"]
    fields = _walk_fields(schema)
    assert all(f.get("doc") for f in fields), [f["name"] for f in fields if not f.get("doc")]
    top = {f["name"]: f for f in schema["fields"]}
    assert EVENT_TIME_FIELDS & top.keys(), "every record carries its source event time"
    assert all(top[f]["type"] == TIMESTAMP for f in EVENT_TIME_FIELDS & top.keys())


@pytest.mark.parametrize("name", all_schema_names())
def test_optionals_default_to_null_and_enums_have_defaults(name: str) -> None:
    schema = load_schema(name)
    for field in _walk_fields(schema):
        if isinstance(field["type"], list):
            assert field["type"][0] == "null" and field.get("default", "missing") is None, field["name"]
    for enum in _named(schema, "enum"):
        assert enum.get("default") in enum["symbols"], enum["name"]


def test_sign_conventions_are_documented() -> None:
    fields = {f["name"]: f["doc"] for f in load_schema("SiteTelemetry")["fields"]}
    assert "positive = discharging" in fields["battery_kw"]
    assert "positive = importing" in fields["grid_kw"]
