"""Schema registry: an abstraction a Confluent client can implement, and a local file-backed one.

Every Avro message on our topics starts with a 4-byte schema id, so every process
must agree on what an id means. A central registry (Confluent) hands out ids; the
local registry instead *derives* the id from the schema text, so the same schema
gets the same id in every process and across restarts with no coordination. The
directory only matters for schemas a process never registered itself: a writer
persists ``id -> schema`` there atomically and any reader sharing the directory can
resolve the id.

Subjects follow Confluent's TopicNameStrategy (``<topic>-value``). Because the codec
encodes by record name, every schema is also registered under its RecordNameStrategy
subject (the fully qualified record name, e.g. ``vpp.v1.SiteTelemetry``).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import tempfile
import threading
from collections.abc import Iterator, Mapping
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

AvroSchema = dict[str, Any]
"""A record schema as its JSON object (``json.load`` of an .avsc file)."""

NAMESPACE = "vpp.v1"
"""Namespace of every packaged record; a bare record name is taken to be in it."""

_HISTORY_FILE = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)\.v(?P<version>[0-9]+)\.avsc$")


class SchemaNotFoundError(KeyError):
    """An id or subject the registry does not know."""

    def __str__(self) -> str:
        # KeyError quotes its argument; a readable message is more useful here.
        return str(self.args[0]) if self.args else "schema not found"


class SchemaIdCollisionError(RuntimeError):
    """Two different schemas hash to the same id: one must change (e.g. its doc) to get a new id."""


class SchemaRegistry(Protocol):
    """The registry operations the codec needs; a Confluent Schema Registry client can implement them."""

    def register(self, subject: str, schema: AvroSchema) -> int:
        """Register ``schema`` under ``subject`` (idempotent) and return its id."""
        ...

    def schema_by_id(self, schema_id: int) -> AvroSchema:
        """The schema with this id; raises SchemaNotFoundError when unknown."""
        ...

    def latest(self, subject: str) -> tuple[int, AvroSchema]:
        """The most recently registered (id, schema) of ``subject``; SchemaNotFoundError when none."""
        ...


def topic_subject(topic: str) -> str:
    """Subject of a topic's values under Confluent's TopicNameStrategy."""
    return f"{topic}-value"


def full_record_name(record_name: str) -> str:
    """``SiteTelemetry`` -> ``vpp.v1.SiteTelemetry``; an already qualified name is returned as is."""
    return record_name if "." in record_name else f"{NAMESPACE}.{record_name}"


def record_subject(record_name: str) -> str:
    """Subject of a record under RecordNameStrategy: its fully qualified name."""
    return full_record_name(record_name)


def schema_full_name(schema: AvroSchema) -> str:
    """Fully qualified name of a named schema (record, enum, fixed)."""
    name = str(schema["name"])
    namespace = schema.get("namespace")
    if "." in name or not namespace:
        return name
    return f"{namespace}.{name}"


def canonical_text(schema: AvroSchema) -> str:
    """The schema as compact JSON with sorted keys: what ids are derived from and what is stored.

    Avro's Parsing Canonical Form is deliberately not used: it drops ``logicalType``
    and ``default``, so ``long`` and ``timestamp-millis`` (which decode differently),
    or a field before and after gaining a default, would share one id.
    """
    return json.dumps(schema, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def schema_id(schema: AvroSchema) -> int:
    """Stable id of a schema: the top 31 bits of the SHA-256 of its canonical text (always positive)."""
    digest = hashlib.sha256(canonical_text(schema).encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") >> 1


class LocalSchemaRegistry:
    """A registry with content-derived ids, optionally persisted in a directory shared by processes.

    Layout of ``directory``: ``ids/<id>.avsc`` (canonical schema text, written
    atomically) and ``subjects/<quoted subject>.json`` (ids in registration order,
    updated under an exclusive file lock). With ``directory=None`` it lives in memory
    only; ids are still the same as in any other process.
    """

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self._directory = Path(directory) if directory is not None else None
        self._schemas: dict[int, AvroSchema] = {}
        self._texts: dict[int, str] = {}
        self._subjects: dict[str, list[int]] = {}
        self._lock = threading.Lock()
        if self._directory is not None:
            (self._directory / "ids").mkdir(parents=True, exist_ok=True)
            (self._directory / "subjects").mkdir(parents=True, exist_ok=True)

    @property
    def directory(self) -> Path | None:
        """Where ids and subjects are persisted; None for a memory-only registry."""
        return self._directory

    def register(self, subject: str, schema: AvroSchema) -> int:
        """Register ``schema`` under ``subject``; registering a known schema returns its id unchanged.

        As in Confluent's registry, re-registering an older version does not make it
        the subject's latest again.
        """
        text = canonical_text(schema)
        sid = schema_id(schema)
        with self._lock:
            self._store_schema(sid, text)
            self._add_to_subject(subject, sid)
        return sid

    def schema_by_id(self, schema_id: int) -> AvroSchema:
        """The schema of ``schema_id``, from memory or the shared directory."""
        schema = self._schemas.get(schema_id)
        if schema is None:
            text = self._read_id_file(schema_id)
            if text is None:
                raise SchemaNotFoundError(f"unknown schema id {schema_id}")
            schema = self._remember(schema_id, text)
        return schema

    def latest(self, subject: str) -> tuple[int, AvroSchema]:
        """The last registered version of ``subject``, as seen in memory and in the shared directory."""
        versions = self.versions(subject)
        if not versions:
            raise SchemaNotFoundError(f"no schema registered under subject {subject!r}")
        return versions[-1], self.schema_by_id(versions[-1])

    def versions(self, subject: str) -> list[int]:
        """Ids registered under ``subject``, oldest first."""
        on_disk = self._read_subject_file(subject)
        if on_disk:
            return on_disk
        return list(self._subjects.get(subject, ()))

    def _store_schema(self, sid: int, text: str) -> None:
        known = self._texts.get(sid)
        if known is None:
            known = self._read_id_file(sid)
        if known is not None and known != text:
            raise SchemaIdCollisionError(
                f"schema id {sid} already belongs to a different schema; change the new schema "
                f"(e.g. a doc string) so it gets another id"
            )
        self._remember(sid, text)
        if self._directory is not None and known is None:
            _atomic_write(self._directory / "ids" / f"{sid}.avsc", text)

    def _add_to_subject(self, subject: str, sid: int) -> None:
        versions = self._subjects.setdefault(subject, [])
        if sid not in versions:
            versions.append(sid)
        if self._directory is None:
            return
        with _file_lock(self._directory / ".lock"):
            on_disk = self._read_subject_file(subject)
            merged = on_disk + [v for v in versions if v not in on_disk]
            if merged != on_disk:
                _atomic_write(_subject_path(self._directory, subject), json.dumps(merged))
            self._subjects[subject] = merged

    def _remember(self, sid: int, text: str) -> AvroSchema:
        schema: AvroSchema = json.loads(text)
        self._schemas[sid] = schema
        self._texts[sid] = text
        return schema

    def _read_id_file(self, sid: int) -> str | None:
        if self._directory is None:
            return None
        try:
            return (self._directory / "ids" / f"{sid}.avsc").read_text(encoding="utf-8")
        except FileNotFoundError:
            return None

    def _read_subject_file(self, subject: str) -> list[int]:
        if self._directory is None:
            return []
        try:
            text = _subject_path(self._directory, subject).read_text(encoding="utf-8")
            return [int(v) for v in json.loads(text)]
        except FileNotFoundError:
            return []


def _subject_path(directory: Path, subject: str) -> Path:
    return directory / "subjects" / f"{quote(subject, safe='')}.json"


def _atomic_write(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so a concurrent reader sees the old or the new file, whole."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Exclusive lock between processes sharing a registry directory (read-merge-write of subjects)."""
    with open(path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _avro_dir() -> Traversable:
    return resources.files("schemas") / "avro"


def all_schema_names() -> list[str]:
    """Record names of the packaged current schemas (``schemas/avro/<Name>.avsc``), sorted."""
    return sorted(
        entry.name.removesuffix(".avsc") for entry in _avro_dir().iterdir() if entry.name.endswith(".avsc")
    )


def load_schema(name: str) -> AvroSchema:
    """The packaged current schema of record ``name`` (bare or ``vpp.v1.``-qualified)."""
    bare = name.rsplit(".", 1)[-1]
    entry = _avro_dir() / f"{bare}.avsc"
    if not entry.is_file():
        raise SchemaNotFoundError(
            f"no packaged schema named {name!r}; known: {', '.join(all_schema_names())}"
        )
    schema: AvroSchema = json.loads(entry.read_text(encoding="utf-8"))
    return schema


def history_versions(name: str) -> list[tuple[int, AvroSchema]]:
    """Previous versions of record ``name`` (``schemas/avro/history/<Name>.v<N>.avsc``), oldest first."""
    bare = name.rsplit(".", 1)[-1]
    found: list[tuple[int, AvroSchema]] = []
    for entry in (_avro_dir() / "history").iterdir():
        match = _HISTORY_FILE.match(entry.name)
        if match and match["name"] == bare:
            found.append((int(match["version"]), json.loads(entry.read_text(encoding="utf-8"))))
    return sorted(found, key=lambda item: item[0])


def subjects_for(name: str, topic_values: Mapping[str, str] | None = None) -> list[str]:
    """Every subject a packaged record is registered under: its record subject and its topics' subjects.

    ``topic_values`` maps topic names to the record of their values (the topic
    catalogue, ``core.topics.VALUE_SCHEMAS``): it is passed in because schemas
    are a leaf that knows no topics of its own.
    """
    bare = name.rsplit(".", 1)[-1]
    topics = [topic_subject(topic) for topic, record in (topic_values or {}).items() if record == bare]
    return [record_subject(bare), *topics]


def register_packaged(registry: SchemaRegistry,
                      topic_values: Mapping[str, str] | None = None) -> dict[str, int]:
    """Register every packaged schema, history first, so each subject's latest is the current version.

    Returns the current schema id of each record name.
    """
    current: dict[str, int] = {}
    for name in all_schema_names():
        schemas = [schema for _, schema in history_versions(name)] + [load_schema(name)]
        for subject in subjects_for(name, topic_values):
            for schema in schemas:
                current[name] = registry.register(subject, schema)
    return current


def packaged_registry(directory: str | os.PathLike[str] | None = None,
                      topic_values: Mapping[str, str] | None = None) -> LocalSchemaRegistry:
    """A local registry with every packaged schema registered: what most processes start with."""
    registry = LocalSchemaRegistry(directory)
    register_packaged(registry, topic_values)
    return registry
