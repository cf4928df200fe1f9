"""The telemetry flow's Kafka sink: records are on the broker when an epoch's snapshot returns, and a
record the broker never took fails the snapshot (the epoch is then not counted as written)."""

from __future__ import annotations

import uuid

import pytest
from bytewax.connectors.kafka import KafkaSinkMessage
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from core.config import Settings
from operators.kafka_sink import DeliveryError, EpochKafkaSink
from operators.records import KafkaOut
from tests.conftest import free_port

pytestmark = pytest.mark.integration


def _records(topic: str, count: int) -> list[KafkaOut]:
    return [KafkaSinkMessage(f"k{i}".encode(), f"v{i}".encode(), topic=topic) for i in range(count)]


def _read_all(settings: Settings, topic: str) -> list[bytes | None]:
    consumer = Consumer({"bootstrap.servers": settings.kafka, "group.id": "epoch-sink-test",
                         "enable.partition.eof": True})
    consumer.assign([TopicPartition(topic, 0, 0)])
    values: list[bytes | None] = []
    try:
        while True:
            message = consumer.poll(10)
            assert message is not None, "the topic's end did not come"
            if message.error() is not None:
                break
            values.append(message.value())
    finally:
        consumer.close()
    return values


def test_every_record_is_on_the_broker_when_the_snapshot_returns(stack_settings: Settings) -> None:
    topic = f"epoch-sink-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": stack_settings.kafka})  # held until the topic exists
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    partition = EpochKafkaSink([stack_settings.kafka]).build_part("kafka", "kafka-0", None)
    partition.write_batch(_records(topic, 300)[:100])
    partition.write_batch(_records(topic, 300)[100:])
    partition.snapshot()
    assert _read_all(stack_settings, topic) == [f"v{i}".encode() for i in range(300)]
    partition.close()


def test_a_record_the_broker_never_took_fails_the_snapshot() -> None:
    nowhere = f"127.0.0.1:{free_port()}"
    sink = EpochKafkaSink([nowhere], add_config={"message.timeout.ms": 300})
    partition = sink.build_part("kafka", "kafka-0", None)
    partition.write_batch(_records("anywhere", 3))  # handed over: no wait for the broker here
    with pytest.raises(DeliveryError):
        partition.snapshot()
