"""SiteTelemetry messages decoded a batch at a time, straight into numpy columns.

The telemetry dataflow decodes every reading, and a reading is a fixed layout:
a site id, two longs, an optional long, five doubles, an optional double, an
enum and two optional strings. Decoding message by message into a dict (the
generated decoder of :mod:`schemas.fastread`, ~5 us each), picking fields into
a tuple and turning tuples back into arrays in the shard spends most of the
time on Python objects that are thrown away. Here the messages of one poll are
joined into one buffer and each field is read for every message at once with
array operations: varints byte position by byte position, the five doubles in
one gather, union branches as masks.

Like the generated decoder, this one is strict and never the last word: a
message is *decoded* only if it is framed with the exact writer schema the
decoder was built for, every varint is canonical-width (at most 9 bytes),
every union index is a single byte, the firmware and command strings are ASCII,
its key is its site id, and it ends exactly where its bytes end. Everything
else is left undecoded (``ok`` false) for the caller to decode one by one with
the codec (fastavro has the last word on what a message means and why it is
invalid). Tests check the columns equal fastavro's records.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
Flags = npt.NDArray[np.bool_]
U8 = npt.NDArray[np.uint8]

#: The writer layout the decoder reads: field names and Avro types of SiteTelemetry (v1 and on).
LAYOUT: tuple[tuple[str, Any], ...] = (
    ("site_id", "string"),
    ("seq", "long"),
    ("event_time", "timestamp-millis"),
    ("received_time", ("null", "timestamp-millis")),
    ("soc_pct", "double"), ("battery_kw", "double"), ("solar_kw", "double"), ("load_kw", "double"),
    ("grid_kw", "double"),
    ("battery_temp_c", ("null", "double")),
    ("mode", "enum"),
    ("active_command_id", ("null", "string")),
    ("firmware", ("null", "string")),
)
HEADER_SIZE = 5
#: Longest varint read here: 9 bytes hold 63 bits; longer ones go to the codec.
_MAX_VARINT = 9
_PAD = 64


class UnsupportedLayoutError(Exception):
    """The writer schema is not the layout this decoder reads."""


@dataclass(slots=True)
class TelemetryColumns:
    """One poll's SiteTelemetry messages as columns; rows where ``ok`` is false are not decoded."""

    ok: Flags
    seq: I64
    event_ms: I64
    soc_pct: F64
    battery_kw: F64
    solar_kw: F64
    load_kw: F64
    grid_kw: F64
    #: NaN where ``temp_null`` (no temperature reported); a NaN reported is NaN with ``temp_null`` false.
    battery_temp_c: F64
    temp_null: Flags
    #: Index into the decoder's ``modes``.
    mode: I64
    #: The active command id per row (None: none), for decoded rows.
    active_command_id: list[str | None]


def _kind(schema: Any) -> Any:
    """A field type reduced to the names :data:`LAYOUT` uses."""
    if isinstance(schema, list):
        return tuple(_kind(branch) for branch in schema)
    if isinstance(schema, dict):
        if schema.get("logicalType") == "timestamp-millis" and schema.get("type") == "long":
            return "timestamp-millis"
        if schema.get("type") == "enum":
            return "enum"
        return _kind(schema["type"])
    return schema


class TelemetryColumnDecoder:
    """Decodes batches of SiteTelemetry messages of one writer schema (id ``schema_id``)."""

    def __init__(self, schema: dict[str, Any], schema_id: int) -> None:
        fields = schema.get("fields", [])
        layout = tuple((f["name"], _kind(f["type"])) for f in fields)
        if layout != LAYOUT:
            raise UnsupportedLayoutError(f"schema id {schema_id} is not the SiteTelemetry layout of "
                                         "schemas.columnread")
        mode = next(f["type"] for f in fields if f["name"] == "mode")
        #: The mode enum's symbols, by index.
        self.modes: tuple[str, ...] = tuple(mode["symbols"])
        self._mode_names = np.array(self.modes, dtype=object)
        self.header = np.frombuffer(bytes([0]) + schema_id.to_bytes(4, "big"), dtype=np.uint8)

    def mode_names(self, index: I64) -> npt.NDArray[np.object_]:
        """The mode strings of ``index`` (an object array, the strings shared)."""
        return self._mode_names[index]

    def decode(self, values: Sequence[bytes], keys: Sequence[bytes | None]) -> TelemetryColumns:
        """Decode every message of ``values`` (Confluent-framed) whose key (``keys``, same positions)
        is its site id; ``ok`` says which were."""
        n = len(values)
        lengths = np.fromiter(map(len, values), dtype=np.int64, count=n)
        ends = np.cumsum(lengths)
        starts = ends - lengths
        buf = np.frombuffer(b"".join(values) + bytes(_PAD), dtype=np.uint8)
        limit = len(buf) - _PAD
        r = _Reader(buf, limit, lengths >= HEADER_SIZE + 10)
        for k, byte in enumerate(self.header.tolist()):
            r.ok &= r.byte(starts + k) == byte
        pos = starts + HEADER_SIZE
        # site_id: compared with the key byte for byte (the key is what the shard is found by).
        length, pos = r.varint(pos)
        r.check_length(length, pos, ends)
        r.ok &= _same_as_keys(buf, pos, length, keys, r.ok)
        pos = pos + np.where(r.ok, length, 0)
        seq, pos = r.varint(pos)
        event, pos = r.varint(pos)
        branch, pos = r.union(pos)
        received = branch == 1
        if received.any():
            _, after = r.varint(pos[received])
            pos[received] = after
        doubles = buf[np.minimum(pos, limit)[:, None] + np.arange(40)].copy().view("<f8")
        pos = pos + 40
        branch, pos = r.union(pos)
        temp_null = branch == 0
        temp = buf[np.minimum(pos, limit)[:, None] + np.arange(8)].copy().view("<f8")[:, 0]
        temp = np.where(temp_null, np.nan, temp)
        pos = pos + np.where(temp_null, 0, 8)
        mode = r.byte(pos).astype(np.int64)
        r.ok &= (mode % 2 == 0) & (mode < 2 * len(self.modes))
        mode = np.where(r.ok, mode // 2, 0)
        pos = pos + 1
        commands: list[str | None] = [None] * n
        branch, pos = r.union(pos)
        command_at = np.flatnonzero(branch == 1)
        if len(command_at):
            length, after = r.varint(pos[command_at])
            r.check_length(length, after, ends[command_at], command_at)
            ascii_ = r.ascii(after, length, command_at)
            pos[command_at] = after + np.where(r.ok[command_at], length, 0)
            for row, start, size, plain in zip(command_at.tolist(), after.tolist(), length.tolist(),
                                               ascii_.tolist(), strict=True):
                if plain and r.ok[row]:
                    commands[row] = buf[start:start + size].tobytes().decode("ascii")
        branch, pos = r.union(pos)
        firmware_at = np.flatnonzero(branch == 1)
        if len(firmware_at):
            length, after = r.varint(pos[firmware_at])
            r.check_length(length, after, ends[firmware_at], firmware_at)
            r.ascii(after, length, firmware_at)
            pos[firmware_at] = after + np.where(r.ok[firmware_at], length, 0)
        r.ok &= pos == ends
        return TelemetryColumns(
            ok=r.ok, seq=seq, event_ms=event, soc_pct=doubles[:, 0], battery_kw=doubles[:, 1],
            solar_kw=doubles[:, 2], load_kw=doubles[:, 3], grid_kw=doubles[:, 4], battery_temp_c=temp,
            temp_null=temp_null, mode=mode, active_command_id=commands)


class _Reader:
    """Reads fields at one position per message; a row that reads anything odd gets ``ok`` false
    (its later positions are then meaningless but stay inside the buffer)."""

    def __init__(self, buf: U8, limit: int, ok: Flags) -> None:
        self.buf, self.limit, self.ok = buf, limit, ok
        self._high: I64 | None = None

    def byte(self, pos: I64) -> I64:
        """The byte at each position (past the data: 0 and the row is refused)."""
        self.ok &= pos < self.limit
        return self.buf[np.clip(pos, 0, self.limit)].astype(np.int64)

    def varint(self, pos: I64, rows: I64 | None = None) -> tuple[I64, I64]:
        """Zig-zag varints at ``pos`` (one per row of ``rows``, default all) -> (values, next positions)."""
        at = np.clip(pos, 0, self.limit)
        current = self.buf[at]
        value = (current & 0x7F).astype(np.uint64)
        more = current >= 0x80
        width = np.ones(len(pos), dtype=np.int64)
        shift = 7
        while more.any():
            if shift >= 7 * _MAX_VARINT:
                self._refuse(np.flatnonzero(more), rows)
                break
            going = np.flatnonzero(more)
            current = self.buf[np.minimum(at[going] + width[going], self.limit)]
            value[going] |= (current & 0x7F).astype(np.uint64) << np.uint64(shift)
            width[going] += 1
            more[going] = current >= 0x80
            shift += 7
        self._refuse(np.flatnonzero(pos + width > self.limit), rows)
        signed = (value >> np.uint64(1)).astype(np.int64) ^ -(value & np.uint64(1)).astype(np.int64)
        return signed, pos + width

    def union(self, pos: I64) -> tuple[I64, I64]:
        """A two-branch union's index (0 or 1) at every row; any other byte refuses the row."""
        index = self.byte(pos)
        self.ok &= (index == 0) | (index == 2)
        return index // 2, pos + 1

    def check_length(self, length: I64, pos: I64, ends: I64, rows: I64 | None = None) -> None:
        """A string length must be non-negative and end inside its message."""
        self._refuse(np.flatnonzero((length < 0) | (length > ends - pos)), rows)

    def ascii(self, pos: I64, length: I64, rows: I64) -> Flags:
        """Whether the strings at ``pos`` are plain ASCII (anything else is for the codec to judge)."""
        if self._high is None:
            self._high = np.concatenate(([0], np.cumsum(self.buf >= 0x80)))
        start = np.clip(pos, 0, self.limit)
        end = np.clip(pos + np.maximum(length, 0), 0, self.limit)
        plain: Flags = self._high[end] == self._high[start]
        self._refuse(np.flatnonzero(~plain), rows)
        return plain

    def _refuse(self, which: I64, rows: I64 | None) -> None:
        if len(which):
            self.ok[which if rows is None else rows[which]] = False


def _same_as_keys(buf: U8, pos: I64, length: I64, keys: Sequence[bytes | None], ok: Flags) -> Flags:
    """Rows whose site id bytes (``length`` at ``pos``) equal their key, byte for byte."""
    key_lengths = np.fromiter((-1 if k is None else len(k) for k in keys), dtype=np.int64, count=len(keys))
    same: Flags = ok & (key_lengths == length)
    rows = np.flatnonzero(same)
    if not len(rows):
        return same
    sizes = length[rows]
    joined = np.frombuffer(b"".join(keys[i] or b"" for i in rows.tolist()), dtype=np.uint8)
    # Every byte of every compared id: its position in the buffer, and in ``joined``.
    offsets = np.repeat(pos[rows] - (np.cumsum(sizes) - sizes), sizes)
    at = np.arange(len(joined)) + offsets
    differs = buf[at] != joined
    if differs.any():
        owner = np.repeat(np.arange(len(rows)), sizes)
        same[rows[np.unique(owner[differs])]] = False
    return same
