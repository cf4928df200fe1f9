"""The local registry: content-derived ids agree everywhere; a shared directory resolves foreign ids."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest

from core.topics import VALUE_SCHEMAS
from schemas.registry import (
    LocalSchemaRegistry,
    SchemaIdCollisionError,
    SchemaNotFoundError,
    all_schema_names,
    load_schema,
    packaged_registry,
    record_subject,
    register_packaged,
    schema_id,
    subjects_for,
    topic_subject,
)


def test_same_ids_in_separate_registries_and_directories(tmp_path: Path) -> None:
    first = register_packaged(LocalSchemaRegistry(tmp_path / "a"))
    second = register_packaged(LocalSchemaRegistry(tmp_path / "b"))
    in_memory = register_packaged(LocalSchemaRegistry())
    assert first == second == in_memory
    assert set(first) == set(all_schema_names())
    assert len(set(first.values())) == len(first)
    assert all(0 <= sid < 2**31 for sid in first.values())


def test_same_ids_in_another_process() -> None:
    script = "from schemas.registry import *; print(register_packaged(LocalSchemaRegistry()))"
    output = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True)
    assert output.stdout.strip() == str(register_packaged(LocalSchemaRegistry()))


def test_resolves_ids_registered_by_another_instance(tmp_path: Path) -> None:
    schema = copy.deepcopy(load_schema("SiteStatus"))
    schema["doc"] = "A version only the writer process knows."
    sid = LocalSchemaRegistry(tmp_path).register(record_subject("SiteStatus"), schema)
    other = LocalSchemaRegistry(tmp_path)
    assert other.schema_by_id(sid) == schema
    assert other.latest(record_subject("SiteStatus")) == (sid, schema)
    with pytest.raises(SchemaNotFoundError):
        LocalSchemaRegistry(tmp_path / "elsewhere").schema_by_id(sid)


def test_subject_versions_are_ordered_and_idempotent(tmp_path: Path) -> None:
    registry = LocalSchemaRegistry(tmp_path)
    v1 = load_schema("SiteStatus")
    v2 = copy.deepcopy(v1)
    v2["doc"] = "v2"
    subject = topic_subject("twin.status")
    id1, id2 = registry.register(subject, v1), registry.register(subject, v2)
    assert registry.register(subject, v1) == id1  # re-registering an old version keeps v2 latest
    assert registry.versions(subject) == [id1, id2]
    assert registry.latest(subject) == (id2, v2)
    assert LocalSchemaRegistry(tmp_path).versions(subject) == [id1, id2]


def test_unknown_id_and_subject() -> None:
    registry = LocalSchemaRegistry()
    with pytest.raises(SchemaNotFoundError, match="unknown schema id 7"):
        registry.schema_by_id(7)
    with pytest.raises(SchemaNotFoundError, match="no schema registered"):
        registry.latest("nothing-value")


def test_collision_is_detected(tmp_path: Path) -> None:
    schema = load_schema("CommandAck")
    sid = schema_id(schema)
    (tmp_path / "ids").mkdir()
    (tmp_path / "ids" / f"{sid}.avsc").write_text('{"type": "string"}')
    with pytest.raises(SchemaIdCollisionError):
        LocalSchemaRegistry(tmp_path).register(record_subject("CommandAck"), schema)


def test_id_ignores_key_order_and_whitespace() -> None:
    schema = load_schema("SitePlan")
    reordered = dict(reversed(list(schema.items())))
    assert schema_id(reordered) == schema_id(schema)


def test_packaged_subjects_follow_topic_and_record_naming() -> None:
    assert subjects_for("SiteTelemetry", VALUE_SCHEMAS) == ["vpp.v1.SiteTelemetry", "telemetry.raw-value"]
    assert subjects_for("SiteTelemetry") == ["vpp.v1.SiteTelemetry"]
    registry = packaged_registry(topic_values=VALUE_SCHEMAS)
    sid, schema = registry.latest("telemetry.raw-value")
    assert registry.latest("vpp.v1.SiteTelemetry") == (sid, schema) == (schema_id(schema), schema)
    assert schema == load_schema("SiteTelemetry")


def test_load_schema_errors_list_known_names() -> None:
    assert load_schema("vpp.v1.SiteTelemetry") == load_schema("SiteTelemetry")
    with pytest.raises(SchemaNotFoundError, match="SiteTelemetry"):
        load_schema("Nope")
