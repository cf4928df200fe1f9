"""Backward compatibility: every current schema reads every historic version, and the checker bites."""

from __future__ import annotations

import copy
from collections.abc import Callable
from io import BytesIO
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.read import SchemaResolutionError
from hypothesis import given, settings

from core.topics import TOPICS
from schemas.compat import check_backward
from schemas.registry import all_schema_names, history_versions, load_schema
from tests.schemas.avro_strategies import from_schema

HISTORY = [
    (name, version, schema) for name in all_schema_names() for version, schema in history_versions(name)
]


def test_every_topic_value_schema_is_packaged() -> None:
    assert {spec.value_schema for spec in TOPICS} <= set(all_schema_names())


@pytest.mark.parametrize("name", all_schema_names())
def test_every_current_schema_has_history(name: str) -> None:
    assert history_versions(name), f"add schemas/avro/history/{name}.v1.avsc"


@pytest.mark.parametrize(("name", "version", "old"), HISTORY, ids=[f"{n}.v{v}" for n, v, _ in HISTORY])
def test_current_reads_every_historic_version(name: str, version: int, old: dict[str, Any]) -> None:
    assert check_backward(load_schema(name), old) == []


@pytest.mark.parametrize(("name", "version", "old"), HISTORY, ids=[f"{n}.v{v}" for n, v, _ in HISTORY])
def test_historic_data_decodes_under_the_current_schema(name: str, version: int, old: dict[str, Any]) -> None:
    writer, reader = parse_schema(old), parse_schema(load_schema(name))

    @settings(max_examples=25, deadline=None)
    @given(from_schema(old))
    def round_trip(value: dict[str, Any]) -> None:
        buffer = BytesIO()
        schemaless_writer(buffer, writer, value)
        buffer.seek(0)
        schemaless_reader(buffer, writer, reader)
        assert buffer.tell() == len(buffer.getvalue())

    round_trip()


def _edit(name: str, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    schema = copy.deepcopy(load_schema(name))
    change(schema)
    return schema


def _field(schema: dict[str, Any], name: str) -> dict[str, Any]:
    return next(f for f in schema["fields"] if f["name"] == name)


def _add_required_field(schema: dict[str, Any]) -> None:
    schema["fields"].append({"name": "phase_count", "type": "int", "doc": "Phases."})


def _remove_symbol_and_default(schema: dict[str, Any]) -> None:
    mode = _field(schema, "mode")["type"]
    mode["symbols"].remove("FAULT")
    del mode["default"]


def _long_to_string(schema: dict[str, Any]) -> None:
    _field(schema, "seq")["type"] = "string"


def _nested_item_type(schema: dict[str, Any]) -> None:
    path = _field(schema, "paths")["type"]["items"]
    _field(path, "node_ids")["type"]["items"] = "int"


BREAKS = [
    ("SiteTelemetry", _add_required_field, "SiteTelemetry.phase_count: field added without a default"),
    ("SiteTelemetry", _remove_symbol_and_default, "SiteTelemetry.mode: enum symbols ['FAULT'] were removed"),
    ("SiteTelemetry", _long_to_string, "SiteTelemetry.seq: written as long, which cannot be read as string"),
    ("SiteAncestry", _nested_item_type, "SiteAncestry.paths[].node_ids[]: written as string"),
]


@pytest.mark.parametrize(("name", "change", "message"), BREAKS, ids=[b[1].__name__ for b in BREAKS])
def test_checker_reports_real_breaks(
    name: str, change: Callable[[dict[str, Any]], None], message: str
) -> None:
    problems = check_backward(_edit(name, change), load_schema(name))
    assert len(problems) == 1
    assert problems[0].startswith(message)


@pytest.mark.parametrize(("name", "change", "message"), BREAKS[:3], ids=[b[1].__name__ for b in BREAKS[:3]])
def test_reported_breaks_really_fail_to_decode(
    name: str, change: Callable[[dict[str, Any]], None], message: str
) -> None:
    old = load_schema(name)
    writer, reader = parse_schema(old), parse_schema(_edit(name, change))

    @settings(max_examples=20, deadline=None)
    @given(from_schema(old).filter(lambda v: v.get("mode", "FAULT") == "FAULT"))
    def fails(value: dict[str, Any]) -> None:
        buffer = BytesIO()
        schemaless_writer(buffer, writer, value)
        buffer.seek(0)
        with pytest.raises((SchemaResolutionError, ValueError)):
            schemaless_reader(buffer, writer, reader)

    fails()


def test_compatible_evolutions_pass() -> None:
    def evolve(schema: dict[str, Any]) -> None:
        schema["fields"].append(
            {"name": "phase_count", "type": ["null", "int"], "default": None, "doc": "P."}
        )
        _field(schema, "mode")["type"]["symbols"].remove("FAULT")  # unknown symbols read as UNKNOWN
        _field(schema, "battery_temp_c")["type"] = ["null", "double", "string"]

    assert check_backward(_edit("SiteTelemetry", evolve), load_schema("SiteTelemetry")) == []


@pytest.mark.parametrize(
    ("writer", "reader"),
    [
        ("int", "long"),
        ("int", "double"),
        ("long", "float"),
        ("float", "double"),
        ("string", "bytes"),
        ("bytes", "string"),
    ],
)
def test_promotions_are_compatible(writer: str, reader: str) -> None:
    def record(kind: str) -> dict[str, Any]:
        return {"type": "record", "name": "P", "fields": [{"name": "v", "type": kind}]}

    assert check_backward(record(reader), record(writer)) == []


def test_readable_messages_for_other_breaks() -> None:
    def record(name: str, field_type: Any, **extra: Any) -> dict[str, Any]:
        return {"type": "record", "name": name, "fields": [{"name": "v", "type": field_type, **extra}]}

    ts = {"type": "long", "logicalType": "timestamp-millis"}
    assert "logical type changed" in check_backward(record("R", "long"), record("R", ts))[0]
    assert "record name changed" in check_backward(record("S", "long"), record("R", "long"))[0]
    assert "matches no branch" in check_backward(record("R", ["null", "int"]), record("R", "string"))[0]
    assert (
        "does not fit"
        in check_backward(
            {"type": "record", "name": "R", "fields": [{"name": "w", "type": ["null", "int"], "default": 1}]},
            {"type": "record", "name": "R", "fields": []},
        )[0]
    )
    assert check_backward({"type": "nonsense"}, record("R", "long"))[0].startswith("not a valid Avro schema")


@pytest.mark.parametrize("name", all_schema_names())
def test_every_schema_is_compatible_with_itself(name: str) -> None:
    assert check_backward(load_schema(name), load_schema(name)) == []
