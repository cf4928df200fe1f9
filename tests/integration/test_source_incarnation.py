"""The dataflows' Kafka source resumes only inside the log its stored offsets came from.

The local broker keeps topics in memory: after ``vpp down`` / ``vpp up`` the same
topic names hold new, short logs while the recovery stores still hold offsets
of the old ones. A stored offset from another incarnation of the topic (another
topic id) or beyond the end of the log must not be used: the partition is read
from its beginning, so nothing of the new log is skipped.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest
from confluent_kafka import OFFSET_BEGINNING, Producer
from confluent_kafka.admin import NewTopic

from core import kafka
from core.config import Settings
from core.waiting import wait_until
from operators.kafka_batches import BatchedKafkaSource, Position, resume_offset

pytestmark = pytest.mark.integration


def test_resume_offset_rules() -> None:
    def end(offset: int) -> Callable[[], int]:
        return lambda: offset

    assert resume_offset(None, "a", end(10)) == OFFSET_BEGINNING
    assert resume_offset(Position("a", 7), "a", end(10)) == 7
    assert resume_offset(Position("a", 11), "a", end(1)) == 11  # same log: its reported end is not needed
    assert resume_offset(Position("old", 7), "new", end(10)) == OFFSET_BEGINNING
    assert resume_offset(Position(None, 7), "a", end(10)) == 7  # no id stored: only the end can tell
    assert resume_offset(Position(None, 11), "a", end(10)) == OFFSET_BEGINNING  # the broker was emptied
    assert resume_offset(24_735, "a", end(3)) == OFFSET_BEGINNING  # a store from before positions
    assert resume_offset(2, None, end(3)) == 2


def _topic_with(settings: Settings, records: int) -> str:
    topic = f"incarnation-{uuid.uuid4().hex[:8]}"
    admin = kafka.admin(settings)  # keep the client alive until the future resolves
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(timeout=30)
    producer = Producer(kafka.client_config(settings))
    for i in range(records):
        producer.produce(topic, key=b"k", value=str(i).encode())
    assert producer.flush(30) == 0
    return topic


def _read_all(source: BatchedKafkaSource, topic: str,
              resume: Position | int | None) -> tuple[list[int], Position]:
    part = source.build_part("in", f"0-{topic}", resume)
    values: list[int] = []
    try:
        def drained() -> bool:
            try:
                for polled in part.next_batch():
                    values.extend(int(m.value() or b"-1") for m in polled.messages)
            except StopIteration:
                return True
            return False

        assert wait_until(drained, 60, interval_s=0.01), "the partition never reached its end"
        return values, part.snapshot()
    finally:
        part.close()


def test_a_position_from_another_incarnation_reads_the_topic_from_its_beginning(
        stack_settings: Settings) -> None:
    topic = _topic_with(stack_settings, 5)
    source = BatchedKafkaSource([stack_settings.kafka], [topic], tail=False)
    incarnation = source.incarnation(topic)
    assert incarnation is not None, "the local broker gives topic ids"

    values, position = _read_all(source, topic, None)
    assert values == [0, 1, 2, 3, 4]
    assert position == Position(incarnation, 5)

    assert _read_all(source, topic, Position(incarnation, 3))[0] == [3, 4]  # same log: resume
    assert _read_all(source, topic, Position("another-broker", 3))[0] == [0, 1, 2, 3, 4]
    assert _read_all(source, topic, 24_735)[0] == [0, 1, 2, 3, 4]  # an old store's bare offset
