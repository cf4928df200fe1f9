"""The dataflows commit their progress to a consumer group, so standard Kafka lag tools see it.

Bytewax keeps the offsets a flow resumes from in its recovery store, which no
lag tool reads. The source therefore also commits each partition's position to
the flow's group at every snapshot: on the real (Tansu) broker the committed
offsets, read the way ``kafka-consumer-groups --describe`` reads them
(``list_consumer_group_offsets``), equal the records the flow has read, so the
lag they imply (records in the partition minus committed offset) is exact. The
commits never replace the recovery store: a partition resumes from its stored
position, whatever the group holds.
"""

from __future__ import annotations

import subprocess
import uuid
from collections import Counter

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import NewTopic

from core import kafka
from core.config import Settings
from core.topics import ASSETS_CHANGES, TELEMETRY_DATAFLOW_GROUP, TELEMETRY_RAW
from core.waiting import wait_until
from operators.kafka_batches import BatchedKafkaSource, Position
from tests.telemetry import flowrun
from tests.telemetry.flowrun import committed_offsets
from tests.telemetry.scenario import generate

pytestmark = pytest.mark.integration


def _topic(settings: Settings, per_partition: list[int]) -> str:
    topic = f"group-progress-{uuid.uuid4().hex[:8]}"
    admin = kafka.admin(settings)
    admin.create_topics([NewTopic(topic, len(per_partition), 1)])[topic].result(timeout=30)
    producer = Producer(kafka.client_config(settings))
    for partition, count in enumerate(per_partition):
        for i in range(count):
            producer.produce(topic, partition=partition, key=b"k", value=str(i).encode())
    assert producer.flush(30) == 0
    return topic


def _drain(part: object) -> list[int]:
    """Read a partition to its end (the source stops there with tail=False)."""
    values: list[int] = []

    def ended() -> bool:
        try:
            for polled in part.next_batch():  # type: ignore[attr-defined]
                values.extend(int(m.value() or b"-1") for m in polled.messages)
        except StopIteration:
            return True
        return False

    assert wait_until(ended, 60, interval_s=0.01), "the partition never reached its end"
    return values


def test_source_commits_its_position_at_each_snapshot_and_resumes_from_recovery(
        stack_settings: Settings) -> None:
    topic = _topic(stack_settings, [7, 4])
    group = f"lag-tools-{uuid.uuid4().hex[:8]}"
    source = BatchedKafkaSource([stack_settings.kafka], [topic], tail=False, group_id=group)

    first = source.build_part("in", f"0-{topic}", None)
    assert _drain(first) == list(range(7))
    assert committed_offsets(stack_settings, group, topic) == {}, "nothing is committed before a snapshot"
    assert first.snapshot().offset == 7
    assert wait_until(lambda: committed_offsets(stack_settings, group, topic) == {0: 7}, 120, interval_s=0.1)
    second = source.build_part("in", f"1-{topic}", None)
    assert _drain(second) == list(range(4))
    second.close()  # closing commits what no snapshot has yet
    assert committed_offsets(stack_settings, group, topic) == {0: 7, 1: 4}
    first.close()

    # The recovery store, not the group, says where a partition resumes.
    incarnation = source.incarnation(topic)
    resumed = source.build_part("in", f"0-{topic}", Position(incarnation, 3))
    assert _drain(resumed) == [3, 4, 5, 6]
    resumed.close()
    fresh = source.build_part("in", f"0-{topic}", None)
    assert _drain(fresh) == list(range(7)), "a partition without recovery state starts at the beginning"
    fresh.close()

    silent = BatchedKafkaSource([stack_settings.kafka], [topic], tail=False)  # no group: nothing committed
    part = silent.build_part("in", f"1-{topic}", None)
    _drain(part)
    part.snapshot()
    part.close()
    assert "vpp-dataflow-offsets-in-recovery" not in {
        g.group_id for g in kafka.admin(stack_settings).list_consumer_groups().result().valid}


def test_telemetry_flow_progress_is_visible_to_lag_tools(
        own_broker: tuple[Settings, subprocess.Popen[bytes]]) -> None:
    """After the real telemetry dataflow has read N records, its group's offsets say so: lag 0."""
    settings, _ = own_broker
    sc = generate(n_sites=40, minutes=1.5, seed=11)
    flowrun.produce(settings, sc)
    records = {topic: Counter(m.partition() for m in flowrun.read_to_end(settings, topic))
               for topic in (TELEMETRY_RAW, ASSETS_CHANGES)}
    assert sum(records[TELEMETRY_RAW].values()) == len(sc.readings)
    assert committed_offsets(settings, TELEMETRY_DATAFLOW_GROUP, TELEMETRY_RAW) == {}

    flowrun.run_to_end(settings)

    for topic, per_partition in records.items():
        offsets = committed_offsets(settings, TELEMETRY_DATAFLOW_GROUP, topic)
        lag = {p: per_partition[p] - offsets.get(p, 0) for p in per_partition}
        assert lag == dict.fromkeys(per_partition, 0), (topic, offsets, dict(per_partition))
    flowrun.reset_outputs(settings)
