"""From Kafka messages to shard batches, and from dataflow results to Kafka records.

The first step of the telemetry dataflow runs on whichever worker reads a
partition: it decodes each message with the project codec and groups readings
and ancestry changes by shard, so the keyed step downstream receives a few
lists instead of thousands of items. Anything it cannot use becomes a dead
letter carrying the original bytes, where they came from and why they failed;
the flow goes on.

Decoding is not trusting: every SiteTelemetry is checked again with
:func:`core.plausibility.check_telemetry` against the wall clock (physics bounds
and bounded event time; the site's rating is checked by its shard, which knows
it), since anyone with access to ``telemetry.raw`` can write to it. A record
that fails is dead-lettered with the reason as ``error_kind`` (one of
:data:`core.plausibility.REASONS`) and counted per reason
(``vpp_telemetry_rejected_total``).
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from operator import itemgetter
from typing import Any, NamedTuple

import numpy as np
from bytewax.connectors.kafka import KafkaSinkMessage
from confluent_kafka import Message
from prometheus_client import Counter

from core.plausibility import Implausible, Rules, check_telemetry, plausible_rows
from core.topics import AGGREGATES_LIVE, TELEMETRY_DLQ, TELEMETRY_RAW, TWIN_STATUS
from operators.flow_metrics import DEAD_LETTERS, RECORDS_IN, flow_of
from operators.kafka_batches import Polled
from operators.reading_columns import I64, ReadingColumns
from operators.shard import bucket_of
from operators.twin import Reading
from schemas import AvroCodec, DecodeError, packaged_codec
from schemas.columnread import TelemetryColumnDecoder, UnsupportedLayoutError
from schemas.times import from_epoch_ms, wall_ms

DLQ_KEY = "dead-letter"
#: Keys whose site id and shard the decode step remembers before it starts afresh.
_MAX_KNOWN_SITES = 1 << 20
CONSUMER = "dataflows.telemetry"

KafkaOut = KafkaSinkMessage[bytes | None, bytes | None]

#: Device records the telemetry dataflow refused as implausible, by reason (core.plausibility.REASONS).
REJECTED = Counter("vpp_telemetry_rejected_total",
                   "SiteTelemetry records dead-lettered as implausible, by reason", ["reason"])


class Origin(NamedTuple):
    """Where a record came from, kept beside a decoded reading so a later step can dead-letter it."""

    key: bytes | None
    value: bytes
    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None

    @classmethod
    def of(cls, msg: Message) -> Origin:
        partition, offset, timestamp = msg.partition(), msg.offset(), msg.timestamp()
        return cls(msg.key(), msg.value() or b"", msg.topic() or "",
                   partition if partition is not None else -1, offset if offset is not None else -1,
                   timestamp[1] if timestamp is not None and timestamp[1] > 0 else None)


@cache
def codec() -> AvroCodec:
    """One codec per process (schemas parsed once)."""
    return packaged_codec()


@dataclass(frozen=True)
class OriginColumns:
    """The origins of a batch's readings as a few buffers and arrays, for the batch's trip to another
    process: pickling an Origin per reading (its bytes included) cost twice what decoding the reading
    did (issue 21); joined buffers pickle at a small part of that. Indexing gives an :class:`Origin`."""

    keys: bytes
    #: End of each key in ``keys``; -1 where the message had no key.
    key_ends: I64
    values: bytes
    value_ends: I64
    topics: tuple[str, ...]
    #: Position in ``topics``, partition, offset and timestamp (-1: none) of each origin.
    topic_at: I64
    partitions: I64
    offsets: I64
    timestamps: I64

    @classmethod
    def of(cls, origins: Sequence[Origin | Message]) -> OriginColumns:
        if all(isinstance(found, Message) for found in origins):  # the usual case: a field at a time
            messages: Sequence[Message] = origins  # type: ignore[assignment]
            keys = [msg.key() for msg in messages]
            values = [msg.value() or b"" for msg in messages]
            topics = [msg.topic() or "" for msg in messages]
            partitions = [-1 if (p := msg.partition()) is None else p for msg in messages]
            offsets = [-1 if (o := msg.offset()) is None else o for msg in messages]
            stamps = [_timestamp(msg) for msg in messages]
        else:
            rows = [found if isinstance(found, Origin) else Origin.of(found) for found in origins]
            keys, values, topics = [r.key for r in rows], [r.value for r in rows], [r.topic for r in rows]
            partitions, offsets = [r.partition for r in rows], [r.offset for r in rows]
            stamps = [-1 if r.timestamp_ms is None else r.timestamp_ms for r in rows]
        key_ends = np.cumsum(np.fromiter((0 if key is None else len(key) for key in keys), dtype=np.int64,
                                         count=len(keys)))
        no_key = np.fromiter((key is None for key in keys), dtype=np.bool_, count=len(keys))
        names = tuple(sorted(set(topics)))
        number = {topic: n for n, topic in enumerate(names)}
        return cls(b"".join(key for key in keys if key is not None), np.where(no_key, -1, key_ends),
                   b"".join(values),
                   np.cumsum(np.fromiter(map(len, values), dtype=np.int64, count=len(values))),
                   names, np.array([number[topic] for topic in topics], dtype=np.int64),
                   np.array(partitions, dtype=np.int64), np.array(offsets, dtype=np.int64),
                   np.array(stamps, dtype=np.int64))

    @classmethod
    def concat(cls, parts: Sequence[OriginColumns]) -> OriginColumns:
        """The rows of ``parts``, one after the other."""
        if len(parts) == 1:
            return parts[0]
        if not parts:
            return cls.of([])
        names = tuple(sorted({topic for part in parts for topic in part.topics}))
        number = {topic: n for n, topic in enumerate(names)}
        key_ends, value_ends, topic_at = [], [], []
        key_base = value_base = 0
        for part in parts:
            key_ends.append(np.where(part.key_ends < 0, -1, part.key_ends + key_base))
            value_ends.append(part.value_ends + value_base)
            key_base, value_base = key_base + len(part.keys), value_base + len(part.values)
            renumber = np.array([number[topic] for topic in part.topics] or [0], dtype=np.int64)
            topic_at.append(renumber[part.topic_at])
        return cls(b"".join(part.keys for part in parts), np.concatenate(key_ends),
                   b"".join(part.values for part in parts), np.concatenate(value_ends), names,
                   np.concatenate(topic_at), np.concatenate([part.partitions for part in parts]),
                   np.concatenate([part.offsets for part in parts]),
                   np.concatenate([part.timestamps for part in parts]))

    def __len__(self) -> int:
        return len(self.offsets)

    def __getitem__(self, index: int) -> Origin:
        key_end = int(self.key_ends[index])
        key_start = int(np.max(self.key_ends[:index], initial=0))
        value_start = int(self.value_ends[index - 1]) if index else 0
        timestamp = int(self.timestamps[index])
        return Origin(None if key_end < 0 else self.keys[key_start:key_end],
                      self.values[value_start:int(self.value_ends[index])],
                      self.topics[self.topic_at[index]], int(self.partitions[index]),
                      int(self.offsets[index]), None if timestamp < 0 else timestamp)


def _timestamp(msg: Message) -> int:
    """The message's timestamp in ms, -1 for none."""
    stamp = msg.timestamp()
    return stamp[1] if stamp is not None and stamp[1] > 0 else -1


_UNKNOWN = object()


class PolledOrigins:
    """The messages of one poll of one partition, where the decode step's readings came from.

    The keys and values are the lists the decode step read anyway (a value of None as ``b""``, as
    :meth:`Origin.of` has it); the topic and partition are the poll's, which every message of a
    poll shares. A batch going to another process picks its rows' origins out of these
    (:meth:`OriginRows.columns`) instead of asking each message for every field again.
    """

    __slots__ = ("_first", "_keys", "_values", "messages", "partition", "topic")

    def __init__(self, messages: list[Message], topic: str, partition: int,
                 keys: list[bytes | None] | None = None, values: list[bytes] | None = None,
                 without_errors: bool = False) -> None:
        """``without_errors``: the caller saw that no message is an error (only then may
        :meth:`first_offset` trust the first and last offsets alone)."""
        self.messages = messages
        self.topic = topic
        self.partition = partition
        self._keys = keys
        self._values = values
        self._first: int | object | None = _UNKNOWN if without_errors else None

    @property
    def keys(self) -> list[bytes | None]:
        if self._keys is None:
            self._keys = [msg.key() for msg in self.messages]
        return self._keys

    @property
    def values(self) -> list[bytes]:
        if self._values is None:
            self._values = [msg.value() or b"" for msg in self.messages]
        return self._values

    def first_offset(self) -> int | None:
        """The first message's offset if the poll's offsets run on without a gap, else None."""
        if self._first is _UNKNOWN:
            messages = self.messages
            first, last = messages[0].offset(), messages[-1].offset()
            # The records of one partition come in growing offsets: n of them from first to
            # first + n - 1 are each of those in turn.
            run = first is not None and last is not None and first >= 0 and last - first == len(messages) - 1
            self._first = first if run else None
        return self._first  # type: ignore[return-value]

    def columns(self, rows: I64) -> OriginColumns:
        """The origins of the messages at ``rows``, in that order."""
        at = rows.tolist()
        n = len(at)
        if n < 2:
            return OriginColumns.of([self.messages[i] for i in at])
        pick = itemgetter(*at)
        messages: tuple[Message, ...] = pick(self.messages)
        keys: tuple[bytes | None, ...] = pick(self.keys)
        values: tuple[bytes, ...] = pick(self.values)
        if None in keys:  # a reading without a key (accepted): the general way
            return OriginColumns.of(list(messages))
        first = self.first_offset()
        offsets = rows + first if first is not None else np.fromiter(
            (-1 if (o := msg.offset()) is None else o for msg in messages), dtype=np.int64, count=n)
        stamps = np.fromiter((msg.timestamp()[1] for msg in messages), dtype=np.int64, count=n)
        keyed: tuple[bytes, ...] = keys  # type: ignore[assignment]  # no None: checked above
        return OriginColumns(
            b"".join(keyed), np.cumsum(np.fromiter(map(len, keyed), dtype=np.int64, count=n)),
            b"".join(values), np.cumsum(np.fromiter(map(len, values), dtype=np.int64, count=n)),
            (self.topic,), np.zeros(n, dtype=np.int64), np.full(n, self.partition, dtype=np.int64),
            offsets.astype(np.int64, copy=False), np.where(stamps > 0, stamps, -1))


@dataclass(frozen=True, slots=True)
class OriginRows:
    """The origins of a batch's readings while it stays in this process: rows of polls, in order.

    An :class:`Origin` is made only for the rare reading a shard refuses (indexing); a batch that
    crosses to another process takes :meth:`columns` along.
    """

    pieces: tuple[tuple[PolledOrigins, I64], ...]

    def __len__(self) -> int:
        return sum(len(rows) for _, rows in self.pieces)

    def __getitem__(self, index: int) -> Origin:
        for polled, rows in self.pieces:
            if index < len(rows):
                return Origin.of(polled.messages[int(rows[index])])
            index -= len(rows)
        raise IndexError(index)

    def columns(self) -> OriginColumns:
        """The origins as columns, for a trip to another process.

        Per row only what differs between messages is read: key and value (from the lists the
        decode step made), the timestamp, and the offset where a poll's offsets are not consecutive.
        """
        return OriginColumns.concat([polled.columns(rows) for polled, rows in self.pieces])


@dataclass(slots=True)
class ShardBatch:
    """Decoded input for one shard from one poll of one partition.

    A batch is not changed once the decode step has handed it on: one that crosses to another
    process is pickled once (:meth:`__reduce__`), however often Bytewax asks.
    """

    shard: int
    #: The input partition the readings came from ("topic/partition"): the shard's clock tracks each.
    source: str
    #: Newest event time this poll of ``source`` delivered, to any shard: every shard hears it, so a
    #: shard whose own sites have all gone quiet still sees time pass.
    source_max_ms: int = 0
    #: Columns from the decode step; ``(site_id, Reading)`` pairs where a batch is made by hand.
    readings: ReadingColumns | list[tuple[str, Reading]] = field(default_factory=list)
    #: Where each reading came from (same positions as ``readings``), for the shard's dead letters:
    #: rows of the consumer's own messages while the batch stays in this process (an :class:`Origin`
    #: is made only for the rare reading the shard refuses), :class:`OriginColumns` once pickled to
    #: another process; messages or origins in a list where a batch is made by hand.
    origins: list[Origin | Message] | OriginRows | OriginColumns = field(default_factory=list)
    ancestries: list[dict[str, Any]] = field(default_factory=list)
    _pickled: bytes | None = field(default=None, init=False, repr=False, compare=False)

    def origin(self, index: int) -> Origin:
        """Where reading ``index`` came from."""
        origins = self.origins
        if not isinstance(origins, list):
            return origins[index]
        found = origins[index]
        return found if isinstance(found, Origin) else Origin.of(found)

    def __reduce__(self) -> tuple[Callable[[bytes], ShardBatch], tuple[bytes]]:
        """The batch as one pickled blob, made the first time it is asked for.

        Messages do not pickle (they hold librdkafka buffers): origins travel as columns. Bytewax
        pickles every item that crosses to another process twice (timely sizes a message of items
        with one serialisation, then writes it with another); the blob makes the second a copy.
        """
        if self._pickled is None:
            origins = self.origins
            columns: list[Origin | Message] | OriginColumns
            if not len(origins):  # half the batches: a source's clock for a shard, no readings
                columns = []
            elif isinstance(origins, OriginRows):
                columns = origins.columns()
            else:
                columns = origins if isinstance(origins, OriginColumns) else OriginColumns.of(origins)
            readings = self.readings if len(self.readings) else []
            self._pickled = pickle.dumps((self.shard, self.source, self.source_max_ms, readings, columns,
                                          self.ancestries), protocol=pickle.HIGHEST_PROTOCOL)
        return _unpickled_batch, (self._pickled,)


def _unpickled_batch(blob: bytes) -> ShardBatch:
    shard, source, source_max_ms, readings, origins, ancestries = pickle.loads(blob)
    return ShardBatch(shard, source, source_max_ms, readings, origins, ancestries)


def decoded(poll: Polled, schema: str, consumer: str,
            reject: Callable[[str, KafkaOut], None]) -> Iterator[tuple[Message, dict[str, Any]]]:
    """Each message of ``poll`` with its record decoded as ``schema``, in order.

    A broker error or a value that does not decode goes to ``reject`` instead, as a dead letter
    naming ``consumer`` (with its kind, for the caller's counters); a tombstone is skipped. The
    control, plans and bidding flows read their topics this way, so they dead-letter alike.
    """
    decode = codec().decode
    for msg in poll.messages:
        error, value = msg.error(), msg.value()
        if error is not None:
            reject("KAFKA_ERROR", dead_letter(msg, "KAFKA_ERROR", str(error), consumer))
            continue
        if value is None:
            continue
        try:
            record = decode(value, schema)
        except DecodeError as exc:
            reject(exc.reason.value, dead_letter(msg, exc.reason.value, exc.message, consumer))
            continue
        yield msg, record


def dead_letter(msg: Message, kind: str, error: str, consumer: str = CONSUMER) -> KafkaOut:
    """A DeadLetter record for ``telemetry.dlq``, keyed like the original, naming the consumer that failed."""
    return dead_letter_of(Origin.of(msg), kind, error, consumer)


def dead_letter_of(origin: Origin, kind: str, error: str, consumer: str = CONSUMER) -> KafkaOut:
    """A DeadLetter record for the record ``origin`` describes (counted by flow and kind)."""
    DEAD_LETTERS.labels(flow_of(consumer), kind).inc()
    value = codec().encode("DeadLetter", {
        "original_key": origin.key,
        "original_value": origin.value,
        "topic": origin.topic,
        "partition": origin.partition,
        "offset": origin.offset,
        "original_timestamp": None if origin.timestamp_ms is None else from_epoch_ms(origin.timestamp_ms),
        "error_kind": kind,
        "error": error,
        "consumer": consumer,
        "failed_at": datetime.now(UTC),
    })
    return KafkaSinkMessage(key=origin.key, value=value, topic=TELEMETRY_DLQ)


def implausible_letter(origin: Origin, verdict: Implausible) -> KafkaOut:
    """The dead letter of a record refused as implausible, counted under its reason."""
    REJECTED.labels(verdict.reason).inc()
    return dead_letter_of(origin, verdict.reason, verdict.detail)


#: Readings by (shard, source) as the decode step collects them: columns and the poll rows they came from.
_Parts = dict[tuple[int, str], list[tuple[ReadingColumns, tuple[PolledOrigins, I64]]]]


def route(polls: list[Polled], shards: int, rules: Rules) -> list[tuple[str, ShardBatch | KafkaOut]]:
    """Decode polled messages into per-shard batches and dead letters (undecodable or implausible)."""
    out: list[tuple[str, ShardBatch | KafkaOut]] = []
    parts: _Parts = {}
    ancestries: dict[tuple[int, str], list[dict[str, Any]]] = {}
    newest_by_source: dict[str, int] = {}
    now_ms = wall_ms()
    for poll in polls:
        RECORDS_IN.labels("telemetry", poll.topic).inc(len(poll.messages))
        source = f"{poll.topic}/{poll.partition}"
        if poll.topic == TELEMETRY_RAW:
            newest = _route_readings(poll, source, shards, rules, now_ms, out, parts)
            if newest:
                newest_by_source[source] = max(newest, newest_by_source.get(source, 0))
        else:
            _route_ancestries(poll.messages, source, shards, out, ancestries)
    keys = set(parts) | set(ancestries)
    for source in newest_by_source:
        keys.update((shard, source) for shard in range(shards))
    for shard, source in sorted(keys, key=lambda k: (k[1], k[0])):
        batch = ShardBatch(shard, source, newest_by_source.get(source, 0))
        pieces = parts.get((shard, source), [])
        if pieces:
            batch.readings = ReadingColumns.concat([columns for columns, _ in pieces])
            batch.origins = OriginRows(tuple(rows for _, rows in pieces))
        batch.ancestries = ancestries.get((shard, source), [])
        out.append((f"shard-{shard}", batch))
    return out


def _route_ancestries(messages: list[Message], source: str, shards: int,
                      out: list[tuple[str, ShardBatch | KafkaOut]],
                      ancestries: dict[tuple[int, str], list[dict[str, Any]]]) -> None:
    for _, (_, record) in _one_by_one(enumerate(messages), "SiteAncestry", out):
        ancestries.setdefault((bucket_of(record["site_id"], shards), source), []).append(record)


def _one_by_one(messages: Iterable[tuple[int, Message]], expected: str,
                out: list[tuple[str, ShardBatch | KafkaOut]]
                ) -> Iterator[tuple[int, tuple[Message, dict[str, Any]]]]:
    """Each (position, message) decoded by the codec (times as epoch ms for telemetry), its key
    checked; what fails becomes a dead letter in ``out``."""
    decode = codec().decode_millis if expected == "SiteTelemetry" else codec().decode
    for position, msg in messages:
        error = msg.error()
        if error is not None:
            out.append((DLQ_KEY, dead_letter(msg, "KAFKA_ERROR", str(error))))
            continue
        value = msg.value()
        if value is None:  # a tombstone on the compacted topic: nothing to apply
            continue
        try:
            record = decode(value, expected)
        except DecodeError as exc:
            out.append((DLQ_KEY, dead_letter(msg, exc.reason.value, exc.message)))
            continue
        site_id = record["site_id"]
        key = msg.key()
        if key is not None and key != site_id.encode():
            out.append((DLQ_KEY, dead_letter(
                msg, "KEY_MISMATCH", f"record for site {site_id!r} under key {key!r}")))
            continue
        yield position, (msg, record)


def _route_readings(poll: Polled, source: str, shards: int, rules: Rules, now_ms: int,
                    out: list[tuple[str, ShardBatch | KafkaOut]],
                    parts: _Parts) -> int:
    """Route one poll of ``telemetry.raw``; returns the newest event time accepted (0: none).

    The poll is decoded into columns at once (:mod:`schemas.columnread`) and checked with
    :func:`core.plausibility.plausible_rows`; a message that either declines (an error, a tombstone,
    another writer schema, a key that is not its site id, anything unusual) or that fails a rule goes
    the codec's way one by one, as before, which dead-letters it with its reason, or accepts it.
    Readings keep their arrival order within a shard.
    """
    decoder = column_decoder()
    messages = poll.messages
    n = len(messages)
    if decoder is None or n == 0:
        readings, at, shard_of, newest = _one_reading_at_a_time(messages, range(n), shards, rules, now_ms,
                                                                out)
        _add_parts(readings, at, shard_of, PolledOrigins(messages, poll.topic, poll.partition), source, parts)
        return newest
    values = [m.value() or b"" for m in messages]
    keys = [m.key() for m in messages]
    columns = decoder.decode(values, keys)
    fields = {"seq": columns.seq, "event_time": columns.event_ms, "soc_pct": columns.soc_pct,
              "battery_kw": columns.battery_kw, "solar_kw": columns.solar_kw, "load_kw": columns.load_kw,
              "grid_kw": columns.grid_kw, "battery_temp_c": columns.battery_temp_c,
              "temp_null": columns.temp_null}
    with np.errstate(invalid="ignore"):
        good = columns.ok & plausible_rows(fields, now_ms, rules)
    errors = any(m.error() is not None for m in messages)
    if errors:
        good &= np.fromiter((m.error() is None for m in messages), dtype=np.bool_, count=n)
    fast = np.flatnonzero(good)
    sites = _sites(shards)
    named = [sites.get(k) or _site(k, shards) for k in map(keys.__getitem__, fast.tolist())]  # type: ignore[arg-type]
    if any(entry is None for entry in named):  # a key that is not UTF-8: the codec says why
        usable = np.fromiter((entry is not None for entry in named), dtype=np.bool_, count=len(named))
        fast = fast[usable]
        good[:] = False
        good[fast] = True
    found = [entry for entry in named if entry is not None]
    commands = np.empty(len(fast), dtype=object)
    commands[:] = [columns.active_command_id[i] for i in fast.tolist()]
    readings = ReadingColumns(
        [entry[0] for entry in found], columns.event_ms[fast], columns.seq[fast],
        {"soc": columns.soc_pct[fast], "battery": columns.battery_kw[fast], "solar": columns.solar_kw[fast],
         "load": columns.load_kw[fast], "grid": columns.grid_kw[fast], "temp": columns.battery_temp_c[fast]},
        decoder.mode_names(columns.mode[fast]), commands)
    at, shard_of = fast, np.fromiter((entry[1] for entry in found), dtype=np.int64, count=len(found))
    newest = int(readings.event_ms.max()) if len(fast) else 0
    slow = np.flatnonzero(~good)
    if len(slow):
        others, other_at, other_shards, other_newest = _one_reading_at_a_time(
            messages, slow.tolist(), shards, rules, now_ms, out)
        if len(others):  # merged back into arrival order
            order = np.argsort(np.concatenate((at, other_at)), kind="stable")
            readings = ReadingColumns.concat([readings, others]).take(order)
            at = np.concatenate((at, other_at))[order]
            shard_of = np.concatenate((shard_of, other_shards))[order]
            newest = max(newest, other_newest)
    polled = PolledOrigins(messages, poll.topic, poll.partition, keys, values, without_errors=not errors)
    _add_parts(readings, at, shard_of, polled, source, parts)
    return newest


def _add_parts(readings: ReadingColumns, at: I64, shard_of: I64, polled: PolledOrigins, source: str,
               parts: _Parts) -> None:
    """Split ``readings`` (from ``polled.messages[at]``) by shard, keeping their order, into ``parts``."""
    if not len(readings):
        return
    order = np.argsort(shard_of, kind="stable")
    ordered = shard_of[order]
    bounds = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1], True])
    for first, stop in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        rows = order[first:stop]
        parts.setdefault((int(ordered[first]), source), []).append((readings.take(rows), (polled, at[rows])))


def _one_reading_at_a_time(messages: list[Message], which: Iterable[int], shards: int, rules: Rules,
                           now_ms: int, out: list[tuple[str, ShardBatch | KafkaOut]]
                           ) -> tuple[ReadingColumns, I64, I64, int]:
    """The messages at ``which`` decoded and checked one at a time (the codec has the last word):
    the readings accepted, their positions in ``messages``, their shards, the newest event time."""
    newest = 0
    accepted: list[tuple[str, Reading]] = []
    at: list[int] = []
    shard_of: list[int] = []
    from_millis = Reading.from_millis_record
    for position, (msg, record) in _one_by_one(((i, messages[i]) for i in which), "SiteTelemetry", out):
        verdict = check_telemetry(record, now_ms, rules)
        if verdict is not None:
            out.append((DLQ_KEY, implausible_letter(Origin.of(msg), verdict)))
            continue
        site_id = record["site_id"]
        reading = from_millis(record)
        accepted.append((site_id, reading))
        at.append(position)
        shard_of.append(bucket_of(site_id, shards))
        newest = max(newest, reading.event_ms)
    return (ReadingColumns.from_readings(accepted), np.array(at, dtype=np.int64),
            np.array(shard_of, dtype=np.int64), newest)


@cache
def column_decoder() -> TelemetryColumnDecoder | None:
    """The batch decoder of the SiteTelemetry version this process writes; None if its layout changed."""
    sid = codec().schema_id("SiteTelemetry")
    try:
        return TelemetryColumnDecoder(codec().registry.schema_by_id(sid), sid)
    except UnsupportedLayoutError:
        return None


@cache
def _sites(shards: int) -> dict[bytes, tuple[str, int]]:
    """Site ids and shards by key, learnt as keys arrive (site ids repeat every second)."""
    return {}


def _site(key: bytes, shards: int) -> tuple[str, int] | None:
    """Learn the site id and shard of ``key`` (None: not UTF-8, not a site id)."""
    try:
        site_id = key.decode()
    except UnicodeDecodeError:
        return None
    known = _sites(shards)
    if len(known) >= _MAX_KNOWN_SITES:
        known.clear()
    known[key] = entry = (site_id, bucket_of(site_id, shards))
    return entry


def status_message(site_id: str, status: str, previous: str, at_ms: int,
                   last_seen_ms: int | None) -> KafkaOut:
    """A SiteStatus transition for ``twin.status``."""
    value = codec().encode("SiteStatus", {
        "site_id": site_id, "status": status, "previous_status": previous,
        "event_time": from_epoch_ms(at_ms),
        "last_seen": None if last_seen_ms is None else from_epoch_ms(last_seen_ms),
    })
    return KafkaSinkMessage(key=site_id.encode(), value=value, topic=TWIN_STATUS)


def aggregate_message(record: dict[str, Any]) -> KafkaOut:
    """A NodeAggregate for ``aggregates.live``."""
    value = codec().encode("NodeAggregate", record)
    return KafkaSinkMessage(key=record["node_id"].encode(), value=value, topic=AGGREGATES_LIVE)
