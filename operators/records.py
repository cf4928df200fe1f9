"""From Kafka messages to shard batches, and from dataflow results to Kafka records.

The first step of the telemetry dataflow runs on whichever worker reads a
partition: it decodes each message with the project codec and groups readings
and ancestry changes by shard, so the keyed step downstream receives a few
lists instead of thousands of items. Anything it cannot use becomes a dead
letter carrying the original bytes, where they came from and why they failed;
the flow goes on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from typing import Any

from bytewax.connectors.kafka import KafkaSinkMessage
from confluent_kafka import Message

from core.topics import AGGREGATES_LIVE, TELEMETRY_DLQ, TELEMETRY_RAW, TWIN_STATUS
from operators.kafka_batches import Polled
from operators.shard import bucket_of
from operators.twin import Reading
from schemas import AvroCodec, DecodeError, packaged_codec
from schemas.times import from_epoch_ms

DLQ_KEY = "dead-letter"
CONSUMER = "dataflows.telemetry"

KafkaOut = KafkaSinkMessage[bytes | None, bytes | None]


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
    ancestries: list[dict[str, Any]] = field(default_factory=list)


def dead_letter(msg: Message, kind: str, error: str, consumer: str = CONSUMER) -> KafkaOut:
    """A DeadLetter record for ``telemetry.dlq``, keyed like the original, naming the consumer that failed."""
    partition, offset = msg.partition(), msg.offset()
    value = codec().encode("DeadLetter", {
        "original_key": msg.key(),
        "original_value": msg.value() or b"",
        "topic": msg.topic() or "",
        "partition": partition if partition is not None else -1,
        "offset": offset if offset is not None else -1,
        "original_timestamp": _kafka_time(msg.timestamp()),
        "error_kind": kind,
        "error": error,
        "consumer": consumer,
        "failed_at": datetime.now(UTC),
    })
    return KafkaSinkMessage(key=msg.key(), value=value, topic=TELEMETRY_DLQ)


def _kafka_time(timestamp: tuple[int, int] | None) -> datetime | None:
    if timestamp is None or timestamp[1] <= 0:
        return None
    return from_epoch_ms(timestamp[1])


def route(polls: list[Polled], shards: int) -> list[tuple[str, ShardBatch | KafkaOut]]:
    """Decode polled messages into per-shard batches and dead letters."""
    out: list[tuple[str, ShardBatch | KafkaOut]] = []
    by_shard: dict[tuple[int, str], ShardBatch] = {}
    newest_by_source: dict[str, int] = {}
    decode, decode_millis = codec().decode, codec().decode_millis
    for poll in polls:
        source = f"{poll.topic}/{poll.partition}"
        telemetry = poll.topic == TELEMETRY_RAW
        expected = "SiteTelemetry" if telemetry else "SiteAncestry"
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
            shard = bucket_of(site_id, shards)
            target = by_shard.get((shard, source))
            if target is None:
                target = by_shard[(shard, source)] = ShardBatch(shard, source)
            if telemetry:
                reading = Reading.from_millis_record(record)
                target.readings.append((site_id, reading))
                if reading.event_ms > newest_by_source.get(source, 0):
                    newest_by_source[source] = reading.event_ms
            else:
                target.ancestries.append(record)
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
