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

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from typing import Any, NamedTuple

from bytewax.connectors.kafka import KafkaSinkMessage
from confluent_kafka import Message
from prometheus_client import Counter

from core.plausibility import Implausible, Rules, check_telemetry
from core.topics import AGGREGATES_LIVE, TELEMETRY_DLQ, TELEMETRY_RAW, TWIN_STATUS
from operators.flow_metrics import DEAD_LETTERS, RECORDS_IN, flow_of
from operators.kafka_batches import Polled
from operators.shard import bucket_of
from operators.twin import Reading
from schemas import AvroCodec, DecodeError, packaged_codec
from schemas.times import from_epoch_ms, wall_ms

DLQ_KEY = "dead-letter"
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


@dataclass(slots=True)
class ShardBatch:
    """Decoded input for one shard from one poll of one partition."""

    shard: int
    #: The input partition the readings came from ("topic/partition"): the shard's clock tracks each.
    source: str
    #: Newest event time this poll of ``source`` delivered, to any shard: every shard hears it, so a
    #: shard whose own sites have all gone quiet still sees time pass.
    source_max_ms: int = 0
    readings: list[tuple[str, Reading]] = field(default_factory=list)
    #: Where each reading came from (same positions as ``readings``), for the shard's dead letters:
    #: the consumer's own messages while the batch stays in this process (an :class:`Origin` is
    #: made only for the rare reading the shard refuses), Origins once pickled to another process.
    origins: list[Origin | Message] = field(default_factory=list)
    ancestries: list[dict[str, Any]] = field(default_factory=list)

    def origin(self, index: int) -> Origin:
        """Where reading ``index`` came from."""
        found = self.origins[index]
        return found if isinstance(found, Origin) else Origin.of(found)

    def __getstate__(self) -> tuple[Any, ...]:
        """Messages do not pickle (they hold librdkafka buffers): they travel as Origins."""
        return (self.shard, self.source, self.source_max_ms, self.readings,
                [self.origin(i) for i in range(len(self.origins))], self.ancestries)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        (self.shard, self.source, self.source_max_ms, self.readings, self.origins,
         self.ancestries) = state


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


def route(polls: list[Polled], shards: int, rules: Rules) -> list[tuple[str, ShardBatch | KafkaOut]]:
    """Decode polled messages into per-shard batches and dead letters (undecodable or implausible)."""
    out: list[tuple[str, ShardBatch | KafkaOut]] = []
    by_shard: dict[tuple[int, str], ShardBatch] = {}
    newest_by_source: dict[str, int] = {}
    decode, decode_millis = codec().decode, codec().decode_millis
    now_ms = wall_ms()
    from_millis = Reading.from_millis_record
    for poll in polls:
        RECORDS_IN.labels("telemetry", poll.topic).inc(len(poll.messages))
        source = f"{poll.topic}/{poll.partition}"
        telemetry = poll.topic == TELEMETRY_RAW
        expected = "SiteTelemetry" if telemetry else "SiteAncestry"
        newest = newest_by_source.get(source, 0)
        for msg in poll.messages:
            error = msg.error()
            if error is not None:
                out.append((DLQ_KEY, dead_letter(msg, "KAFKA_ERROR", str(error))))
                continue
            value = msg.value()
            if value is None:  # a tombstone on the compacted topic: nothing to apply
                continue
            try:
                record = decode_millis(value, expected) if telemetry else decode(value, expected)
            except DecodeError as exc:
                out.append((DLQ_KEY, dead_letter(msg, exc.reason.value, exc.message)))
                continue
            site_id = record["site_id"]
            key = msg.key()
            if key is not None and key != site_id.encode():
                out.append((DLQ_KEY, dead_letter(
                    msg, "KEY_MISMATCH", f"record for site {site_id!r} under key {key!r}")))
                continue
            if telemetry:
                verdict = check_telemetry(record, now_ms, rules)
                if verdict is not None:
                    out.append((DLQ_KEY, implausible_letter(Origin.of(msg), verdict)))
                    continue
            shard = bucket_of(site_id, shards)
            target = by_shard.get((shard, source))
            if target is None:
                target = by_shard[(shard, source)] = ShardBatch(shard, source)
            if telemetry:
                reading = from_millis(record)
                target.readings.append((site_id, reading))
                target.origins.append(msg)
                newest = max(newest, reading.event_ms)
            else:
                target.ancestries.append(record)
        if newest:
            newest_by_source[source] = newest
    for source, newest in newest_by_source.items():
        for shard in range(shards):
            target = by_shard.get((shard, source))
            if target is None:
                target = by_shard[(shard, source)] = ShardBatch(shard, source)
            target.source_max_ms = newest
    out.extend((f"shard-{shard}", target) for (shard, _), target in by_shard.items())
    return out



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
