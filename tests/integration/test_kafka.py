"""Topics on the real broker, and Avro records through the codec to a topic and back."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import ConfigResource, NewTopic

from core import kafka
from core.config import Settings
from core.topics import ASSETS_CHANGES, DAY_MS, HOUR_MS, TELEMETRY_RAW, TOPICS, TopicSpec
from schemas import DecodeError, DecodeErrorReason, packaged_codec

pytestmark = pytest.mark.integration


def test_every_topic_exists_with_its_configured_partitions(stack_settings: Settings) -> None:
    topics = kafka.admin(stack_settings).list_topics(timeout=10).topics
    for spec in TOPICS:
        assert spec.name in topics, f"{spec.name} was not created"
        assert len(topics[spec.name].partitions) == stack_settings.partitions_of(spec.name)
    assert len(topics[TELEMETRY_RAW].partitions) == 6  # the per-topic override of the fixture
    assert len(topics["commands.site"].partitions) == 3  # the default of the fixture


def test_assets_changes_is_compacted(stack_settings: Settings) -> None:
    resource = ConfigResource(ConfigResource.Type.TOPIC, ASSETS_CHANGES)
    admin = kafka.admin(stack_settings)  # keep the client alive until the future resolves
    future = admin.describe_configs([resource])[resource]
    assert future.result(timeout=10)["cleanup.policy"].value == "compact"


def test_every_topic_is_created_with_its_retention(stack_settings: Settings) -> None:
    """The local broker stores them (Tansu 0.6 does not enforce them: see docs/architecture.md, Topics);
    a real Kafka provisioned by the same call deletes by them."""
    admin = kafka.admin(stack_settings)
    resources = [ConfigResource(ConfigResource.Type.TOPIC, spec.name) for spec in TOPICS]
    described = {resource.name: future.result(timeout=10)
                 for resource, future in admin.describe_configs(resources).items()}
    for spec in TOPICS:
        want = spec.topic_configs()
        assert {name: described[spec.name][name].value for name in want} == want, spec.name


def _configs(settings: Settings, topic: str) -> dict[str, str | None]:
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    admin = kafka.admin(settings)
    return {name: entry.value for name, entry in admin.describe_configs([resource])[resource]
            .result(timeout=10).items()}


def _old_topic(settings: Settings, partitions: int, **configs: str) -> str:
    """A topic as an older version provisioned it: its own partition count and configs."""
    name = f"test.old.{uuid.uuid4().hex[:8]}"
    admin = kafka.admin(settings)
    admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1,
                                  config=configs)])[name].result(timeout=10)
    return name


def test_existing_topics_get_the_catalogues_configs_and_keep_the_rest(stack_settings: Settings) -> None:
    """A cluster provisioned before topics had a retention (none set), or with another one, is brought to
    the catalogue; a config the catalogue does not declare stays; partitions are never changed."""
    unset = _old_topic(stack_settings, 1, **{"max.message.bytes": "123456"})
    other = _old_topic(stack_settings, 5, **{"retention.ms": str(7 * DAY_MS)})
    specs = (TopicSpec(unset, "k", "SiteTelemetry", retention_ms=12 * HOUR_MS),
             TopicSpec(other, "k", "SiteTelemetry", retention_ms=HOUR_MS))
    states = {state.name: state for state in kafka.ensure_topics(stack_settings, specs)}

    assert [str(change) for change in states[unset].altered] == [
        f"retention.ms unset -> {12 * HOUR_MS}", f"segment.ms unset -> {3 * HOUR_MS}"]
    assert [str(change) for change in states[other].altered] == [
        f"retention.ms {7 * DAY_MS} -> {HOUR_MS}", f"segment.ms unset -> {HOUR_MS // 4}"]
    assert not states[unset].created and not states[other].created
    assert {"max.message.bytes": "123456", "retention.ms": str(12 * HOUR_MS),
            "segment.ms": str(3 * HOUR_MS)}.items() <= _configs(stack_settings, unset).items()
    assert {"retention.ms": str(HOUR_MS),
            "segment.ms": str(HOUR_MS // 4)}.items() <= _configs(stack_settings, other).items()
    # Fewer partitions than the settings ask for (3) stay fewer, more stay more.
    assert (states[unset].partitions, states[other].partitions) == (1, 5)
    again = kafka.ensure_topics(stack_settings, specs)
    assert [state.altered for state in again] == [(), ()], "a second run changes nothing"


def test_provisioning_the_catalogue_twice_changes_nothing(stack_settings: Settings) -> None:
    states = kafka.ensure_topics(stack_settings)
    assert [state.name for state in states] == [spec.name for spec in TOPICS]
    assert not any(state.created or state.altered for state in states)


def test_avro_round_trip_through_the_broker(stack_settings: Settings) -> None:
    codec = packaged_codec()
    now = datetime.now(UTC).replace(microsecond=0)
    readings: list[dict[str, Any]] = [
        {
            "site_id": f"site-{i}", "seq": i, "event_time": now, "received_time": None, "soc_pct": 50.0 + i,
            "battery_kw": 1.5 * i, "solar_kw": 2.0, "load_kw": 0.5, "grid_kw": -1.0, "battery_temp_c": None,
            "mode": "SELF_CONSUMPTION", "active_command_id": None, "firmware": None,
        }
        for i in range(50)
    ]
    topic = TELEMETRY_RAW
    consumer = Consumer(kafka.client_config(
        stack_settings, **{"group.id": f"test-{uuid.uuid4()}", "enable.auto.commit": False}))
    partitions = kafka.admin(stack_settings).list_topics(topic, timeout=10).topics[topic].partitions
    # Other tests share the topic: read from where it ends now, before this test produces.
    ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions}
    producer = Producer(kafka.client_config(stack_settings))
    for reading in readings:
        producer.produce(topic, key=reading["site_id"].encode(), value=codec.encode("SiteTelemetry", reading))
    assert producer.flush(10) == 0
    consumer.assign([TopicPartition(topic, p, ends[p]) for p in partitions])
    received: dict[str, dict[str, object]] = {}
    ours = {r["site_id"] for r in readings}
    for _ in range(100):
        for message in consumer.consume(num_messages=100, timeout=0.5):
            assert message.error() is None
            raw_value, raw_key = message.value(), message.key()
            assert raw_value is not None and raw_key is not None
            value = codec.decode(raw_value, expected="SiteTelemetry")
            assert raw_key.decode() == value["site_id"]
            received[value["site_id"]] = value
        if ours <= set(received):  # other tests' readings on the shared topic count for nothing
            break
    consumer.close()
    assert set(received) >= ours
    for reading in readings:
        assert {k: received[reading["site_id"]][k] for k in reading} == reading


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x01\x00\x00\x00\x01abc", DecodeErrorReason.WRONG_MAGIC),
        (b"\x00\x7f\xff\xff\xfeabc", DecodeErrorReason.UNKNOWN_SCHEMA_ID),
        (b"\x00\x00", DecodeErrorReason.TRUNCATED),
    ],
)
def test_malformed_bytes_raise_the_typed_error(data: bytes, reason: DecodeErrorReason) -> None:
    with pytest.raises(DecodeError) as caught:
        packaged_codec().decode(data)
    assert caught.value.reason == reason
