"""Hypothesis strategies generating valid values for any Avro schema, for round-trip properties.

Values are generated in the form the codec decodes to, so encode-then-decode must
return them unchanged: ``float`` fields get float32-representable values and
``timestamp-millis`` fields aware UTC datetimes at millisecond precision.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hypothesis import strategies as st

_INT32 = 2**31
_INT64 = 2**63
_MIN_TIME = datetime(1900, 1, 1)  # noqa: DTZ001 - hypothesis bounds are naive; timezones= makes values aware
_MAX_TIME = datetime(2200, 1, 1)  # noqa: DTZ001

_PRIMITIVES: dict[str, st.SearchStrategy[Any]] = {
    "null": st.none(),
    "boolean": st.booleans(),
    "int": st.integers(-_INT32, _INT32 - 1),
    "long": st.integers(-_INT64, _INT64 - 1),
    "float": st.floats(width=32, allow_nan=False),
    "double": st.floats(allow_nan=False),
    "bytes": st.binary(max_size=24),
    "string": st.text(max_size=24),
}

timestamps_millis: st.SearchStrategy[datetime] = st.datetimes(
    min_value=_MIN_TIME, max_value=_MAX_TIME, timezones=st.just(UTC)
).map(lambda moment: moment.replace(microsecond=moment.microsecond // 1000 * 1000))


def from_schema(schema: Any, namespace: str = "") -> st.SearchStrategy[Any]:
    """A strategy for values of ``schema`` (the JSON form of an .avsc file)."""
    return _Builder().build(schema, namespace)


class _Builder:
    """Builds strategies while remembering named types, so later references by name resolve."""

    def __init__(self) -> None:
        self.named: dict[str, st.SearchStrategy[Any]] = {}

    def build(self, schema: Any, namespace: str) -> st.SearchStrategy[Any]:
        if isinstance(schema, list):
            return st.one_of([self.build(branch, namespace) for branch in schema])
        if isinstance(schema, str):
            return _PRIMITIVES[schema] if schema in _PRIMITIVES else self._reference(schema, namespace)
        kind = schema["type"]
        if schema.get("logicalType") == "timestamp-millis":
            return timestamps_millis
        if kind == "record":
            return self._record(schema, namespace)
        if kind == "enum":
            return self._register(schema, namespace, st.sampled_from(schema["symbols"]))
        if kind == "array":
            return st.lists(self.build(schema["items"], namespace), max_size=4)
        if kind == "map":
            return st.dictionaries(st.text(max_size=8), self.build(schema["values"], namespace), max_size=4)
        if kind == "fixed":
            return self._register(
                schema, namespace, st.binary(min_size=schema["size"], max_size=schema["size"])
            )
        return self.build(kind, namespace)

    def _record(self, schema: dict[str, Any], namespace: str) -> st.SearchStrategy[Any]:
        inner = schema.get("namespace", namespace)
        fields = {f["name"]: self.build(f["type"], inner) for f in schema["fields"]}
        return self._register(schema, namespace, st.fixed_dictionaries(fields))

    def _register(
        self, schema: dict[str, Any], namespace: str, strategy: st.SearchStrategy[Any]
    ) -> st.SearchStrategy[Any]:
        self.named[_full_name(schema["name"], schema.get("namespace", namespace))] = strategy
        return strategy

    def _reference(self, name: str, namespace: str) -> st.SearchStrategy[Any]:
        qualified = _full_name(name, namespace)
        return self.named[qualified] if qualified in self.named else self.named[name]


def _full_name(name: str, namespace: str) -> str:
    return name if "." in name or not namespace else f"{namespace}.{name}"
