"""A Kafka source that hands the dataflow one item per poll instead of one per message.

Bytewax's own ``KafkaSource`` wraps every message in a Python dataclass and
sends each through the dataflow as an item of its own; at tens of thousands of
telemetry messages a second that wrapping was the largest single cost after
decoding. This source emits a :class:`Polled` batch (the consumer's own
``Message`` objects) per poll of a partition, and the decode step unpacks it.
Partitions, offsets kept in the recovery store, ``tail`` and resume work as in
Bytewax's source: each Kafka partition is one source partition.

A partition's state is a :class:`Position`: the next offset *and* the
incarnation of the topic it belongs to (the topic id the broker gave the topic
when it was created). An offset only means something in the log it was read
from: the local broker keeps its topics in memory, so after a restart the same
topic names hold new, short logs, and a stored offset of 24,735 would skip the
first 24,735 new records (or wait for them for minutes). A resumed partition
whose topic is a different incarnation (or, where the broker gives no topic ids,
whose log ends before the stored offset) is read from its beginning instead
(:func:`resume_offset`).

With a ``group_id`` the source also *commits* each partition's position to
that consumer group at every epoch's snapshot (:mod:`operators.group_commits`,
without waiting; closing a partition waits a bounded moment for its last
commit), so standard lag tools (``kafka-consumer-groups --describe``, Burrow,
kafka-lag-exporter) see how far each dataflow has read. The commits are for
those tools only: the source never reads them back, a partition still resumes
from the recovery store, and the consumers never join the group (assign mode),
so several flows or a replay cannot rebalance one another.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicCollection,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from typing_extensions import override

from core.kafka import library_logs
from operators.group_commits import GroupCommitter
from operators.readiness import FLOW_HEALTH
from operators.worker_threads import keep_thread_state

log = logging.getLogger(__name__)

#: The topic id a broker without topic ids reports (all zero bits, base64).
_NO_TOPIC_ID = "AAAAAAAAAAAAAAAAAAAAAA"
#: How long a partition whose last poll found nothing waits before it is polled again. Bytewax
#: re-polls an empty partition after 1 ms unless told otherwise, so an idle flow's worker called
#: ``consume`` (blocking 1 ms each) on every partition about a hundred times a second: 4-5% of a
#: core per idle flow. A record waits at most this long more, beside the ~250 ms the local broker
#: holds every fetch.
IDLE_POLL = timedelta(milliseconds=50)


@dataclass(frozen=True, slots=True)
class Polled:
    """The messages one poll of one partition returned (errors included, to be dead-lettered)."""

    topic: str
    partition: int
    messages: list[Message]


@dataclass(frozen=True, slots=True)
class Position:
    """Where a partition's reading stands: the next offset in the topic incarnation ``incarnation``.

    ``incarnation`` is the topic's id, None when the broker has none to give.
    """

    incarnation: str | None
    offset: int


def resume_offset(resume: Position | int | None, incarnation: str | None, log_end: Callable[[], int]) -> int:
    """The offset to start a partition at, given its stored state and the topic as it is now.

    A stored position from another incarnation of the topic means the log is not the
    one it was read from: read it from the beginning. The same incarnation resumes
    where it stood. When either side has no incarnation (a broker without topic ids,
    or a bare ``int`` from a store written before positions carried one) only the end
    of the log can tell: an offset beyond it means the broker was emptied. The end is
    a lower bound on Tansu (it reports the last batch's base offset + 1), so that check
    may replay a log from its beginning once, which the idempotent sinks absorb.
    """
    if resume is None:
        return OFFSET_BEGINNING
    if isinstance(resume, int):
        resume = Position(None, resume)
    if resume.incarnation is not None and incarnation is not None:
        return resume.offset if resume.incarnation == incarnation else OFFSET_BEGINNING
    return resume.offset if resume.offset <= log_end() else OFFSET_BEGINNING


def part_name(topic: str, partition: int, by_topic: bool) -> str:
    """The source partition's name (see ``by_topic`` of :class:`BatchedKafkaSource`)."""
    return f"{topic}-{partition}" if by_topic else f"{partition}-{topic}"


def partition_of(part: str, by_topic: bool) -> tuple[str, int]:
    """The topic and Kafka partition a source partition named by :func:`part_name` reads."""
    if by_topic:
        topic, index = part.rsplit("-", 1)
    else:
        index, topic = part.split("-", 1)
    return topic, int(index)


class _Partition(StatefulSourcePartition[Polled, Position | int]):
    def __init__(self, config: dict[str, object], topic: str, partition: int,
                 resume: Position | int | None, incarnation: str | None, batch_size: int,
                 committer: GroupCommitter | None = None) -> None:
        self._committer = committer
        self._committed = -1  # the last position handed to the group
        self._last_commit: Future[object] | None = None
        self._consumer = Consumer(config)
        tp = TopicPartition(topic, partition)
        consumer = self._consumer
        offset = resume_offset(resume, incarnation, lambda: int(consumer.get_watermark_offsets(tp, 30)[1]))
        if resume is not None and offset == OFFSET_BEGINNING:
            stored = resume.offset if isinstance(resume, Position) else resume
            log.warning("%s[%d]: the stored offset %d belongs to another log (the topic is a new "
                        "incarnation, or the broker was emptied): reading the partition from its beginning",
                        topic, partition, stored)
        self._consumer.assign([TopicPartition(topic, partition, offset)])
        self._topic = topic
        self._partition = partition
        self._incarnation = incarnation
        self._offset = 0 if offset == OFFSET_BEGINNING else offset
        self._batch_size = batch_size
        self._eof = False
        self._idle = False

    @override
    def next_batch(self) -> list[Polled]:
        if self._eof:
            raise StopIteration
        FLOW_HEALTH.polled()
        messages = self._consumer.consume(self._batch_size, 0)  # never blocks: see next_awake
        self._idle = not messages
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
    def next_awake(self) -> datetime | None:
        # After a poll that found nothing, come back in IDLE_POLL; after one that found some, at once.
        return datetime.now(UTC) + IDLE_POLL if self._idle else None

    @override
    def snapshot(self) -> Position:
        self._commit_position()
        FLOW_HEALTH.epoch_done()
        return Position(self._incarnation, self._offset)

    def _commit_position(self) -> None:
        """Hand a new position to the group (for lag tools), without waiting for the answer."""
        if self._committer is not None and self._offset != self._committed:
            self._last_commit = self._committer.commit(self._topic, self._partition, self._offset)
            self._committed = self._offset

    @override
    def close(self) -> None:
        self._commit_position()
        if self._committer is not None:
            self._committer.settle(self._last_commit)
        self._consumer.close()


class BatchedKafkaSource(FixedPartitionedSource[Polled, Position | int]):
    """Every partition of ``topics``; with ``tail`` False each stops at the end it finds.

    ``group_id``: the consumer group each partition's position is committed to at every
    snapshot, for lag tools (None: nothing is committed).

    ``by_topic``: name the source partitions ``{topic}-{index}`` instead of ``{index}-{topic}``.
    Bytewax hands the partitions to workers in the order of their names, each to the worker with
    the fewest so far, so with ``{index}-{topic}`` the topics interleave and one topic's
    partitions can all land on one worker: with 6 partitions of ``telemetry.raw`` and 4 of
    ``assets.changes`` on two processes, one read 5 of the 6 telemetry partitions (and decoded
    5/6 of the input) while the other had the 4 compacted ones and 1. ``{topic}-{index}`` keeps
    each topic's partitions together, so each topic is spread evenly. The names are the keys of
    the stored positions: a recovery store written under the other naming finds none and reads
    its topics from the beginning once (which the idempotent sinks absorb), so only flows that
    may replay choose it.
    """

    def __init__(self, brokers: list[str], topics: list[str], tail: bool = True, batch_size: int = 2000,
                 extra: dict[str, object] | None = None, group_id: str | None = None,
                 by_topic: bool = False) -> None:
        self._brokers = ",".join(brokers)
        self._group_id = group_id
        self._committer: GroupCommitter | None = None
        self._topics = topics
        self._tail = tail
        self._batch_size = batch_size
        self._extra = extra or {}
        self._incarnations: dict[str, str | None] = {}
        self._by_topic = by_topic

    @override
    def list_parts(self) -> list[str]:
        # Every worker lists the parts on its own thread before any item flows: the hook that lets
        # a worker thread keep its Python thread state (operators.worker_threads).
        keep_thread_state()
        admin = AdminClient({"bootstrap.servers": self._brokers, **library_logs()})
        parts = []
        for topic in self._topics:
            metadata = admin.list_topics(topic, timeout=30).topics[topic]
            if metadata.error is not None:
                raise RuntimeError(f"cannot list the partitions of {topic!r}: {metadata.error.str()}")
            parts += [part_name(topic, index, self._by_topic) for index in metadata.partitions]
        return parts

    def incarnation(self, topic: str) -> str | None:
        """The topic's id (new each time the topic is created), None if the broker gives none."""
        if topic not in self._incarnations:
            admin = AdminClient({"bootstrap.servers": self._brokers, **library_logs()})
            try:
                future = admin.describe_topics(TopicCollection([topic]), request_timeout=30)[topic]
                described = future.result()
            except KafkaException as exc:
                log.warning("cannot describe %s (%s): its stored offsets are checked against its end only",
                            topic, exc)
                self._incarnations[topic] = None
            else:
                topic_id = None if described.topic_id is None else str(described.topic_id)
                self._incarnations[topic] = None if topic_id in (None, _NO_TOPIC_ID) else topic_id
        return self._incarnations[topic]

    @override
    def build_part(self, step_id: str, for_part: str, resume_state: Position | int | None) -> _Partition:
        topic, index = partition_of(for_part, self._by_topic)
        config: dict[str, object] = {
            "bootstrap.servers": self._brokers,
            **library_logs(),
            # Offsets are resumed from the recovery store; the group only receives commits (for lag tools).
            "group.id": self._group_id or "vpp-dataflow-offsets-in-recovery",
            "enable.auto.commit": False,
            "enable.partition.eof": not self._tail,
            **self._extra,
        }
        if self._group_id is not None and self._committer is None:
            self._committer = GroupCommitter({"bootstrap.servers": self._brokers, **library_logs()},
                                             self._group_id)
        return _Partition(config, topic, index, resume_state, self.incarnation(topic), self._batch_size,
                          self._committer)
