"""Backward-compatibility check between two Avro schemas, with messages a developer can act on.

Backward compatible means: a consumer holding the new (reader) schema can read
every record written with the old (writer) schema. The rules are Avro's schema
resolution rules, plus one stricter rule: a changed logical type is reported,
because fastavro would read the data but hand the consumer a different kind of
value (an int where it used to get a datetime).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastavro import parse_schema

_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_NAMED = frozenset({"record", "error", "enum", "fixed"})

_PROMOTIONS = frozenset(
    {
        ("int", "long"),
        ("int", "float"),
        ("int", "double"),
        ("long", "float"),
        ("long", "double"),
        ("float", "double"),
        ("string", "bytes"),
        ("bytes", "string"),
    }
)
"""(writer type, reader type) pairs Avro resolves by promotion."""

_DEFAULT_TYPES: dict[str, tuple[type, ...]] = {
    "null": (type(None),),
    "boolean": (bool,),
    "int": (int,),
    "long": (int,),
    "float": (int, float),
    "double": (int, float),
    "bytes": (str,),
    "string": (str,),
    "fixed": (str,),
    "enum": (str,),
    "array": (list,),
    "map": (dict,),
    "record": (dict,),
    "error": (dict,),
}
"""JSON types a field default may have for each Avro type (bytes and fixed defaults are strings)."""


def check_backward(reader_schema: Any, writer_schema: Any) -> list[str]:
    """Problems reading data written with ``writer_schema`` using ``reader_schema``; empty = compatible."""
    try:
        reader_names, reader = _parse(reader_schema)
        writer_names, writer = _parse(writer_schema)
    except Exception as exc:
        return [f"not a valid Avro schema: {exc}"]
    checker = _Checker(reader_names, writer_names)
    checker.check(reader, writer, _type_name(reader, reader_names))
    return checker.problems


def _parse(schema: Any) -> tuple[dict[str, Any], Any]:
    """fastavro's parse qualifies every name and collects the named types for reference lookups."""
    names: dict[str, Any] = {}
    return names, parse_schema(schema, named_schemas=names)


def _kind(schema: Any) -> str:
    if isinstance(schema, list):
        return "union"
    if isinstance(schema, dict):
        return str(schema["type"])
    return str(schema)


def _type_name(schema: Any, names: dict[str, Any]) -> str:
    """A short readable name: the record/enum name, else the kind."""
    resolved = _resolve(schema, names)
    if isinstance(resolved, dict) and _kind(resolved) in _NAMED:
        return str(resolved["name"]).rsplit(".", 1)[-1]
    if isinstance(resolved, list):
        return "[" + ", ".join(_type_name(branch, names) for branch in resolved) + "]"
    return _kind(resolved)


def _resolve(schema: Any, names: dict[str, Any]) -> Any:
    """Follow a reference to a named type; anything else is returned as is."""
    if isinstance(schema, str) and schema not in _PRIMITIVES:
        return names[schema]
    return schema


def _logical(schema: Any) -> str | None:
    return schema.get("logicalType") if isinstance(schema, dict) else None


def _short(name: str) -> str:
    return name.rsplit(".", 1)[-1]


@dataclass
class _Checker:
    """Walks a reader and a writer schema side by side, collecting problems with their field paths."""

    reader_names: dict[str, Any]
    writer_names: dict[str, Any]
    problems: list[str] = field(default_factory=list)
    _seen: set[tuple[str, str]] = field(default_factory=set)

    def check(self, reader: Any, writer: Any, path: str) -> None:
        reader = _resolve(reader, self.reader_names)
        writer = _resolve(writer, self.writer_names)
        if isinstance(writer, list):
            for branch in writer:
                self.check(reader, branch, path)
        elif isinstance(reader, list):
            self._check_reader_union(reader, writer, path)
        elif _kind(reader) != _kind(writer):
            if (_kind(writer), _kind(reader)) not in _PROMOTIONS:
                self.problems.append(
                    f"{path}: written as {_kind(writer)}, which cannot be read as {_kind(reader)}"
                )
        else:
            self._check_same_kind(reader, writer, path)

    def _check_reader_union(self, reader: list[Any], writer: Any, path: str) -> None:
        """Avro picks the first reader branch of the writer's type, else the first it can promote to."""
        branches = [_resolve(branch, self.reader_names) for branch in reader]
        same = [b for b in branches if _kind(b) == _kind(writer) and self._same_name(b, writer)]
        promoted = [b for b in branches if (_kind(writer), _kind(b)) in _PROMOTIONS]
        chosen = (same or promoted or [None])[0]
        if chosen is None:
            self.problems.append(
                f"{path}: written as {_type_name(writer, self.writer_names)}, which matches no branch "
                f"of the reader union {_type_name(reader, self.reader_names)}"
            )
        else:
            self.check(chosen, writer, path)

    def _check_same_kind(self, reader: Any, writer: Any, path: str) -> None:
        if _logical(reader) != _logical(writer):
            old, new = _logical(writer) or "none", _logical(reader) or "none"
            self.problems.append(
                f"{path}: logical type changed from {old} to {new}, "
                f"so readers would get a different kind of value"
            )
        kind = _kind(reader)
        if kind in _NAMED and not self._same_name(reader, writer):
            self.problems.append(
                f"{path}: {kind} name changed from {_short(writer['name'])} to {_short(reader['name'])} "
                f"(add the old name to the reader's aliases)"
            )
        elif kind in ("record", "error"):
            self._check_record(reader, writer, path)
        elif kind == "enum":
            self._check_enum(reader, writer, path)
        elif kind == "fixed" and reader["size"] != writer["size"]:
            self.problems.append(f"{path}: fixed size changed from {writer['size']} to {reader['size']}")
        elif kind == "array":
            self.check(reader["items"], writer["items"], f"{path}[]")
        elif kind == "map":
            self.check(reader["values"], writer["values"], f"{path}{{}}")

    def _same_name(self, reader: Any, writer: Any) -> bool:
        """Named types match on unqualified name or a reader alias; unnamed types always match."""
        if not (isinstance(reader, dict) and _kind(reader) in _NAMED):
            return True
        accepted = {_short(reader["name"]), *(_short(alias) for alias in reader.get("aliases", ()))}
        return _short(writer["name"]) in accepted

    def _check_record(self, reader: dict[str, Any], writer: dict[str, Any], path: str) -> None:
        pair = (reader["name"], writer["name"])
        if pair in self._seen:
            return  # a recursive type: this pair is already being checked further up
        self._seen.add(pair)
        written = {f["name"]: f for f in writer["fields"]}
        for reader_field in reader["fields"]:
            field_path = f"{path}.{reader_field['name']}"
            candidates = [reader_field["name"], *reader_field.get("aliases", ())]
            writer_field = next((written[name] for name in candidates if name in written), None)
            if writer_field is not None:
                self.check(reader_field["type"], writer_field["type"], field_path)
            elif "default" not in reader_field:
                self.problems.append(
                    f"{field_path}: field added without a default, so records written without it "
                    f'cannot be read (give it a default, e.g. make it ["null", T] with default null)'
                )
            else:
                self._check_default(reader_field, field_path)

    def _check_default(self, reader_field: dict[str, Any], path: str) -> None:
        """A default must fit the field's type; for a union, its first branch."""
        schema = _resolve(reader_field["type"], self.reader_names)
        if isinstance(schema, list):
            schema = _resolve(schema[0], self.reader_names)
        expected = _DEFAULT_TYPES.get(_kind(schema), (object,))
        default = reader_field["default"]
        wrong_bool = isinstance(default, bool) and bool not in expected
        if wrong_bool or not isinstance(default, expected):
            self.problems.append(
                f"{path}: default {default!r} does not fit {_type_name(schema, self.reader_names)} "
                f"(a union's default must match its first branch)"
            )

    def _check_enum(self, reader: dict[str, Any], writer: dict[str, Any], path: str) -> None:
        missing = [symbol for symbol in writer["symbols"] if symbol not in reader["symbols"]]
        if missing and reader.get("default") is None:
            self.problems.append(
                f"{path}: enum symbols {missing} were removed and the reader enum has no default symbol"
            )
