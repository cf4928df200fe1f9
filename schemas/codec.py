"""Avro codec with Confluent wire framing: magic byte 0, 4-byte big-endian schema id, Avro binary.

This is the per-message hot path of every producer and consumer, so everything
that can be is computed once per schema id or record name and cached: parsed
schemas, the 5-byte header, the reader schema to resolve to, and a decoder
generated for the schema (``schemas.fastread``) that fastavro backs up whenever it
declines. Decoding failures of any kind surface as one typed ``DecodeError`` whose
``reason`` a consumer can put in a dead letter without parsing messages.

A record written with another version of its schema is resolved automatically to
the version the codec reads that record as (the pinned one, else the registry's
latest): that is what keeping schemas backward compatible buys.
"""

from __future__ import annotations

import contextlib
import enum
import os
import struct
from collections.abc import Mapping
from datetime import datetime
from io import BytesIO
from typing import Any, NamedTuple, cast

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.validation import ValidationError, validate

from schemas.fastread import FastDecoder, UnsupportedSchemaError, compile_decoder
from schemas.registry import (
    AvroSchema,
    SchemaNotFoundError,
    SchemaRegistry,
    all_schema_names,
    full_record_name,
    load_schema,
    packaged_registry,
    record_subject,
    schema_full_name,
)
from schemas.registry import (
    schema_id as content_id,
)
from schemas.times import epoch_ms

MAGIC = 0
"""First byte of every Confluent-framed message."""

HEADER_SIZE = 5
"""Magic byte plus the 4-byte schema id."""

_HEADER = struct.Struct(">BI")


class DecodeErrorReason(enum.Enum):
    """Why bytes could not be decoded; stable names meant for dead letters and metrics."""

    WRONG_MAGIC = "WRONG_MAGIC"
    UNKNOWN_SCHEMA_ID = "UNKNOWN_SCHEMA_ID"
    TRUNCATED = "TRUNCATED"
    SCHEMA_MISMATCH = "SCHEMA_MISMATCH"


class DecodeError(Exception):
    """Bytes that are not a valid message of the expected record; the one error ``decode`` raises."""

    def __init__(self, reason: DecodeErrorReason, message: str) -> None:
        super().__init__(f"{reason.value}: {message}")
        self.reason = reason
        self.message = message


class EncodeError(ValueError):
    """A value that does not fit its record schema; the message names the offending field."""


class Decoded(NamedTuple):
    """A decoded message with what it was written as."""

    record_name: str
    schema_id: int
    value: dict[str, Any]


class _Writer:
    """Everything ``encode`` needs for one record name, computed once."""

    __slots__ = ("header", "name", "schema", "schema_id")

    def __init__(self, name: str, schema_id: int, schema: Any) -> None:
        self.name = name
        self.schema_id = schema_id
        self.schema = schema
        self.header = _HEADER.pack(MAGIC, schema_id)


class _Reader:
    """Everything ``decode`` needs for one schema id, computed once."""

    __slots__ = ("fast", "names", "reader", "record_name", "writer")

    def __init__(self, full_name: str, writer: Any, reader: Any, fast: FastDecoder | None) -> None:
        self.record_name = full_name.rsplit(".", 1)[-1]
        self.names = frozenset((full_name, self.record_name))
        self.writer = writer
        self.reader = reader
        self.fast = fast


class AvroCodec:
    """Encode and decode Confluent-framed Avro records by record name, ids from a ``SchemaRegistry``.

    Records are written and read as the version in ``pinned``, else
    the latest registered one, looked up once per codec; create a new
    codec to pick up versions registered later. Not for concurrent first use of a
    record from several threads (the caches are filled without a lock, which is
    harmless in CPython: the worst case is computing an entry twice).
    """

    def __init__(self, registry: SchemaRegistry, pinned: Mapping[str, AvroSchema] | None = None) -> None:
        """``pinned`` (record name -> schema) fixes the version a record is written and read as, e.g.
        the versions this process's code was written for; other records use the registry's latest.
        """
        self._registry = registry
        self._pinned = {full_record_name(name): schema for name, schema in (pinned or {}).items()}
        self._writers: dict[str, _Writer] = {}
        self._readers: dict[int, _Reader] = {}
        self._millis_decoders: dict[tuple[int, str], FastDecoder | None] = {}

    @property
    def registry(self) -> SchemaRegistry:
        """The registry ids are resolved with."""
        return self._registry

    def schema_id(self, record_name: str) -> int:
        """The id ``encode`` frames ``record_name`` with (its pinned version, else the latest registered)."""
        return self._writer(record_name).schema_id

    def encode(self, record_name: str, value: Mapping[str, Any]) -> bytes:
        """Frame and encode ``value`` as ``record_name`` (bare or qualified): its pinned or latest version.

        Timestamps must be timezone-aware datetimes (or epoch milliseconds): fastavro
        reads a naive datetime as local time. Fields with a default may be omitted;
        unknown fields are an error, so a misspelt field name does not vanish silently.
        """
        writer = self._writers.get(record_name) or self._writer(record_name)
        out = BytesIO()
        out.write(writer.header)
        try:
            schemaless_writer(out, writer.schema, value, strict_allow_default=True)
        except Exception as exc:
            raise EncodeError(f"{writer.name}: {_explain(writer.schema, value, exc)}") from exc
        return out.getvalue()

    def decode(self, data: bytes, expected: str | None = None) -> dict[str, Any]:
        """Decode one framed message; with ``expected`` (bare or qualified), insist on that record.

        Raises DecodeError, and nothing else, for any bytes.
        """
        try:
            magic, sid = _HEADER.unpack_from(data)
        except struct.error:
            raise _header_error(data) from None
        if magic != MAGIC:
            raise _header_error(data)
        reader = self._readers.get(sid) or self._reader(sid)
        if expected is not None and expected not in reader.names:
            raise DecodeError(
                DecodeErrorReason.SCHEMA_MISMATCH,
                f"schema id {sid} is a {reader.record_name}, expected {expected}",
            )
        if reader.fast is not None:
            try:
                value, end = reader.fast(data, HEADER_SIZE)
            except Exception:
                pass
            else:
                if end == len(data):
                    return value
        return _decode_with_fastavro(data, sid, reader)

    def decode_millis(self, data: bytes, expected: str) -> dict[str, Any]:
        """Like :meth:`decode`, with top-level timestamps as epoch milliseconds (int), not datetimes.

        For hot paths that compute with times; the same errors as :meth:`decode`.
        """
        fast = None
        if len(data) >= HEADER_SIZE and data[0] == MAGIC:
            key = (_HEADER.unpack_from(data)[1], expected)
            fast = self._millis_decoders[key] if key in self._millis_decoders else self._millis_decoder(*key)
        if fast is not None:
            try:
                value, end = fast(data, HEADER_SIZE)
            except Exception:
                pass
            else:
                if end == len(data):
                    return value
        value = self.decode(data, expected)
        return {k: epoch_ms(v) if isinstance(v, datetime) else v for k, v in value.items()}

    def _millis_decoder(self, sid: int, expected: str) -> FastDecoder | None:
        try:
            reader = self._readers.get(sid) or self._reader(sid)
        except DecodeError:
            return None  # decode() explains; nothing cached for an id that may be registered later
        fast = None
        if reader.fast is not None and expected in reader.names:
            fast = _fast_decoder(self._registry.schema_by_id(sid), millis=True)
        self._millis_decoders[(sid, expected)] = fast
        return fast

    def decode_millis_exact(self, data: bytes, expected: str) -> dict[str, Any] | None:
        """The generated decoder's reading of ``data`` as ``expected`` (times in epoch ms), or None
        unless it read every byte of a canonical message: for hot paths that forward the bytes
        themselves (anything else goes the way of :meth:`decode`, which has the last word)."""
        if len(data) < HEADER_SIZE or data[0] != MAGIC:
            return None
        key = (_HEADER.unpack_from(data)[1], expected)
        fast = self._millis_decoders[key] if key in self._millis_decoders else self._millis_decoder(*key)
        if fast is None:
            return None
        try:
            value, end = fast(data, HEADER_SIZE)
        except Exception:
            return None
        return value if end == len(data) else None

    def decode_with_info(self, data: bytes, expected: str | None = None) -> Decoded:
        """Decode one framed message and say which record and schema id it was written with."""
        value = self.decode(data, expected)
        sid = int.from_bytes(data[1:HEADER_SIZE], "big")
        return Decoded(self._readers[sid].record_name, sid, value)

    def _writer(self, record_name: str) -> _Writer:
        full_name = full_record_name(record_name)
        schema = self._pinned.get(full_name)
        try:
            if schema is None:
                sid, schema = self._registry.latest(record_subject(full_name))
            else:
                sid = self._registry.register(record_subject(full_name), schema)
        except SchemaNotFoundError as exc:
            raise EncodeError(f"no schema registered for record {record_name!r}") from exc
        writer = _Writer(full_name.rsplit(".", 1)[-1], sid, parse_schema(schema))
        self._writers[record_name] = writer
        return writer

    def _reader(self, sid: int) -> _Reader:
        try:
            schema = self._registry.schema_by_id(sid)
        except SchemaNotFoundError as exc:
            raise DecodeError(
                DecodeErrorReason.UNKNOWN_SCHEMA_ID, f"schema id {sid} is not registered"
            ) from exc
        full_name = schema_full_name(schema)
        target = self._target_schema(full_name)
        resolve_to = None if target is None or content_id(target) == sid else parse_schema(target)
        fast = _fast_decoder(schema) if resolve_to is None else None
        reader = _Reader(full_name, parse_schema(schema), resolve_to, fast)
        self._readers[sid] = reader
        return reader

    def _target_schema(self, full_name: str) -> AvroSchema | None:
        """The schema decode should return records of ``full_name`` in; None means as written."""
        pinned = self._pinned.get(full_name)
        if pinned is not None:
            return pinned
        try:
            return self._registry.latest(record_subject(full_name))[1]
        except SchemaNotFoundError:
            return None


def _fast_decoder(schema: AvroSchema, millis: bool = False) -> FastDecoder | None:
    try:
        return compile_decoder(schema, millis)
    except UnsupportedSchemaError:
        return None



def _decode_with_fastavro(data: bytes, sid: int, reader: _Reader) -> dict[str, Any]:
    """The authoritative decode: resolves old versions and classifies every failure."""
    source = BytesIO(data)
    source.seek(HEADER_SIZE)
    try:
        value = cast(dict[str, Any], schemaless_reader(source, reader.writer, reader.reader))
    except Exception as exc:
        raise _body_error(data, sid, reader, exc) from exc
    if source.tell() != len(data):
        raise DecodeError(
            DecodeErrorReason.SCHEMA_MISMATCH,
            f"{len(data) - source.tell()} trailing bytes after a {reader.record_name} (id {sid})",
        )
    return value


def _header_error(data: bytes) -> DecodeError:
    if len(data) > 0 and data[0] != MAGIC:
        return DecodeError(DecodeErrorReason.WRONG_MAGIC, f"first byte is {data[0]:#04x}, not {MAGIC:#04x}")
    return DecodeError(DecodeErrorReason.TRUNCATED, f"{len(data)} bytes is shorter than the 5-byte header")


class _ShortReadDetector(BytesIO):
    """A BytesIO that notes when a read asked for more bytes than were left (used on the error path only)."""

    ran_short = False

    def read(self, size: int | None = -1, /) -> bytes:
        chunk = super().read(size)
        if size is not None and 0 <= size != len(chunk):
            self.ran_short = True
        return chunk


def _body_error(data: bytes, sid: int, reader: _Reader, exc: Exception) -> DecodeError:
    """Classify a failed body decode: TRUNCATED if the decoder wanted bytes past the end, else mismatch.

    fastavro reports running out of bytes in several ways (EOFError, IndexError,
    struct errors) that invalid data can also raise, so the failing decode is
    replayed on a stream that records short reads, which is exact and costs nothing
    on the hot path.
    """
    replay = _ShortReadDetector(data)
    replay.seek(HEADER_SIZE)
    with contextlib.suppress(Exception):
        schemaless_reader(replay, reader.writer, reader.reader)
    if replay.ran_short:
        return DecodeError(
            DecodeErrorReason.TRUNCATED, f"{reader.record_name} (id {sid}) ends early: {exc!r}"
        )
    return DecodeError(
        DecodeErrorReason.SCHEMA_MISMATCH, f"bytes are not a {reader.record_name} (id {sid}): {exc!r}"
    )


def _explain(schema: Any, value: Mapping[str, Any], exc: Exception) -> str:
    """The validator's message (it names the field path) when it has one, else the writer's."""
    try:
        validate(value, schema, raise_errors=True)
    except ValidationError as invalid:
        return "; ".join(str(error) for error in invalid.errors)
    except Exception as other:
        return str(other)
    return str(exc)


def packaged_codec(directory: str | os.PathLike[str] | None = None) -> AvroCodec:
    """A codec over a local registry holding every packaged schema, decoding into the packaged versions.

    Pinning the readers to the packaged schemas means this process always gets the
    record shape its code was written for, even when a newer producer registered a
    newer version in a shared directory.
    """
    registry = packaged_registry(directory)
    return AvroCodec(registry, {name: load_schema(name) for name in all_schema_names()})
