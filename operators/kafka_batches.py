"""A Kafka source that hands the dataflow one item per poll instead of one per message.

Bytewax's own ``KafkaSource`` wraps every message in a Python dataclass and
sends each through the dataflow as an item of its own; at tens of thousands of
telemetry messages a second that wrapping was the largest single cost after
decoding. This source emits a :class:`Polled` batch (the consumer's own
``Message`` objects) per poll of a partition, and the decode step unpacks it.
Partitions, offsets kept in the recovery store, ``tail`` and resume work as in
Bytewax's source: each Kafka partition is one source partition, its state the
next offset to read.
"""

from __future__ import annotations

from dataclasses import dataclass

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition
from confluent_kafka.admin import AdminClient
from typing_extensions import override


@dataclass(frozen=True, slots=True)
class Polled:
    """The messages one poll of one partition returned (errors included, to be dead-lettered)."""

    topic: str
    partition: int
    messages: list[Message]


class _Partition(StatefulSourcePartition[Polled, int]):
    def __init__(self, config: dict[str, object], topic: str, partition: int, offset: int,
                 batch_size: int) -> None:
        self._consumer = Consumer(config)
        self._consumer.assign([TopicPartition(topic, partition, offset)])
        self._topic = topic
        self._partition = partition
        self._offset = offset
        self._batch_size = batch_size
        self._eof = False

    @override
    def next_batch(self) -> list[Polled]:
        if self._eof:
            raise StopIteration
        messages = self._consumer.consume(self._batch_size, 0.001)
        kept = []
        for message in messages:
            error = message.error()
            if error is not None and error.code() == KafkaError._PARTITION_EOF:
                self._eof = True  # stop at the next call, after emitting what came before it
                break
            kept.append(message)
            offset = message.offset()
            if offset is not None and offset >= 0:
                self._offset = offset + 1
        return [Polled(self._topic, self._partition, kept)] if kept else []

    @override
    def snapshot(self) -> int:
        return self._offset

    @override
    def close(self) -> None:
        self._consumer.close()


class BatchedKafkaSource(FixedPartitionedSource[Polled, int]):
    """Every partition of ``topics``; with ``tail`` False each stops at the end it finds."""

    def __init__(self, brokers: list[str], topics: list[str], tail: bool = True, batch_size: int = 2000,
                 extra: dict[str, object] | None = None) -> None:
        self._brokers = ",".join(brokers)
        self._topics = topics
        self._tail = tail
        self._batch_size = batch_size
        self._extra = extra or {}

    @override
    def list_parts(self) -> list[str]:
        admin = AdminClient({"bootstrap.servers": self._brokers})
        parts = []
        for topic in self._topics:
            metadata = admin.list_topics(topic, timeout=30).topics[topic]
            if metadata.error is not None:
                raise RuntimeError(f"cannot list the partitions of {topic!r}: {metadata.error.str()}")
            parts += [f"{index}-{topic}" for index in metadata.partitions]
        return parts

    @override
    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _Partition:
        index, topic = for_part.split("-", 1)
        config: dict[str, object] = {
            "bootstrap.servers": self._brokers,
            "group.id": "vpp-dataflow-offsets-in-recovery",  # never committed: recovery keeps offsets
            "enable.auto.commit": False,
            "enable.partition.eof": not self._tail,
            **self._extra,
        }
        offset = OFFSET_BEGINNING if resume_state is None else resume_state
        return _Partition(config, topic, int(index), offset, self._batch_size)
