"""The generated fast-path decoders agree with fastavro, and step aside for what they do not handle."""

from __future__ import annotations

from io import BytesIO
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.codec import AvroCodec
from schemas.fastread import UnsupportedSchemaError, compile_decoder, read_long
from schemas.registry import LocalSchemaRegistry, all_schema_names, load_schema, record_subject
from tests.schemas.avro_strategies import from_schema

EVERYTHING: dict[str, Any] = {
    "type": "record",
    "name": "Everything",
    "namespace": "test",
    "fields": [
        {"name": "flag", "type": "boolean"},
        {"name": "small", "type": "int"},
        {"name": "ratio", "type": "float"},
        {"name": "x", "type": "double"},
        {"name": "y", "type": "float"},
        {"name": "blob", "type": "bytes"},
        {"name": "digest", "type": {"type": "fixed", "name": "Digest", "size": 4}},
        {"name": "tags", "type": {"type": "map", "values": ["null", "long", "string"]}},
        {"name": "matrix", "type": {"type": "array", "items": {"type": "array", "items": "double"}}},
        {"name": "same_digest", "type": ["null", "Digest"], "default": None},
        {"name": "nothing", "type": "null"},
    ],
}
SCHEMAS = {name: load_schema(name) for name in all_schema_names()} | {"Everything": EVERYTHING}


def _fastavro(schema: Any, data: bytes) -> tuple[Any, int]:
    source = BytesIO(data)
    value = schemaless_reader(source, parse_schema(schema), None)
    return value, source.tell()


def _encode(schema: Any, value: Any) -> bytes:
    out = BytesIO()
    schemaless_writer(out, parse_schema(schema), value)
    return out.getvalue()


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_fast_decoder_agrees_with_fastavro_on_valid_data(name: str) -> None:
    schema = SCHEMAS[name]
    decoder = compile_decoder(schema)

    @settings(max_examples=50, deadline=None)
    @given(from_schema(schema))
    def agrees(value: dict[str, Any]) -> None:
        data = _encode(schema, value)
        assert decoder(data, 0) == _fastavro(schema, data) == (value, len(data))

    agrees()


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_fast_decoder_never_accepts_what_fastavro_reads_differently(name: str) -> None:
    schema = SCHEMAS[name]
    decoder = compile_decoder(schema)

    @settings(max_examples=150, deadline=None)
    @given(from_schema(schema), st.integers(0, 1000), st.integers(0, 255), st.binary(max_size=3))
    def agrees(value: dict[str, Any], where: int, byte: int, tail: bytes) -> None:
        data = bytearray(_encode(schema, value))
        data[where % len(data)] = byte
        mutated = bytes(data) + tail
        try:
            fast = decoder(mutated, 0)
        except Exception:
            return  # the codec falls back to fastavro, which decides
        assert repr(_fastavro(schema, mutated)) == repr(fast)  # repr: NaN equals NaN, -0.0 is not 0.0

    agrees()


def test_read_long_matches_zigzag_varints() -> None:
    for number in (0, -1, 1, 63, -64, 64, 2**31, -(2**63), 2**63 - 1):
        data = _encode("long", number)
        assert read_long(data, 0) == (number, len(data))


@pytest.mark.parametrize(
    "schema",
    [
        {
            "type": "record",
            "name": "D",
            "fields": [{"name": "d", "type": {"type": "int", "logicalType": "date"}}],
        },
        {"type": "record", "name": "L", "fields": [{"name": "next", "type": ["null", "L"]}]},
        "string",
    ],
)
def test_unsupported_schemas_fall_back_to_fastavro(schema: Any) -> None:
    with pytest.raises(UnsupportedSchemaError):
        compile_decoder(schema)
    if isinstance(schema, dict):
        registry = LocalSchemaRegistry()
        registry.register(record_subject(schema["name"]), schema)
        codec = AvroCodec(registry)
        value = {"d": 0} if schema["name"] == "D" else {"next": {"next": None}}
        decoded = codec.decode(codec.encode(schema["name"], value))
        assert decoded == _fastavro(schema, _encode(schema, value))[0]


def test_an_array_of_doubles_in_several_blocks_one_with_its_byte_size_is_read_whole() -> None:
    import struct

    schema = {"type": "array", "items": "double"}
    wrapper = {"type": "record", "name": "A", "fields": [{"name": "a", "type": schema}]}
    values = [0.5, -1.25, 3.0, 1e-9, -0.0]

    def long(n: int) -> bytes:
        return _encode("long", n)

    # A block of 2 written with a negative count and its byte size, then a block of 3, then the end.
    data = (long(-2) + long(16) + struct.pack("<2d", *values[:2]) + long(3) + struct.pack("<3d", *values[2:])
            + long(0))
    assert compile_decoder(wrapper)(data, 0) == _fastavro(wrapper, data) == ({"a": values}, len(data))
