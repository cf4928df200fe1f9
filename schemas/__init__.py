"""Avro schemas of every topic value, the schema registry and the Confluent-framed codec.

The .avsc files under ``schemas/avro/`` are the contract between producers and
consumers; ``schemas/avro/history/`` keeps every previous version, and each
current schema must stay backward compatible with all of them (checked in tests),
so a consumer on a newer schema can always read what older producers wrote.
ClickHouse DDL lives in ``schemas/clickhouse/``.
"""

from schemas.codec import AvroCodec, Decoded, DecodeError, DecodeErrorReason, EncodeError, packaged_codec
from schemas.registry import (
    LocalSchemaRegistry,
    SchemaRegistry,
    all_schema_names,
    load_schema,
    packaged_registry,
    register_packaged,
)

__all__ = [
    "AvroCodec",
    "DecodeError",
    "DecodeErrorReason",
    "Decoded",
    "EncodeError",
    "LocalSchemaRegistry",
    "SchemaRegistry",
    "all_schema_names",
    "load_schema",
    "packaged_codec",
    "packaged_registry",
    "register_packaged",
]
