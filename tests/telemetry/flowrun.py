"""Run the real telemetry dataflow against a real local stack, and read back what it wrote."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterable
from datetime import UTC
from pathlib import Path
from typing import Any

import redis
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    Producer,
    TopicPartition,
)

from core.config import Settings
from core.history import connect
from core.kafka import admin, client_config
from core.live import aggregate_hashes
from core.topics import ASSETS_CHANGES, TELEMETRY_RAW
from schemas import packaged_codec
from tests.conftest import free_port
from tests.telemetry.scenario import Scenario
from vpp.dataflows import dataflow_argv, ensure_recovery, settings_env

#: ``partition_idle_s`` for a flow replaying recorded input to its end: the shard clock may only run
#: ahead of a partition it has not heard from for this long (wall time). At the default 10 s, a worker
#: or process starved of CPU on a loaded machine (or starting its Kafka consumers late) let the clock
#: run past its partitions' readings, which then counted as late: a cluster of two processes once
#: reported 19 of county-0's 98 sites as reporting. Every partition of a replay carries readings, so
#: none holds the clock back for long.
REPLAY_PARTITION_IDLE_S = 3600.0


def produce(settings: Settings, sc: Scenario, poison: Iterable[tuple[bytes | None, bytes]] = ()) -> None:
    """The scenario's ancestries, then its readings with the poison interleaved evenly.

    The too-late readings go separately (:func:`produce_too_late`), once the dataflow has read
    everything else: only then is "too late" a property of the input, whatever the order in which
    the dataflow happened to read the partitions.
    """
    codec = packaged_codec()
    producer = Producer(client_config(settings, **{"linger.ms": 20}))
    for record in sc.ancestries:
        producer.produce(ASSETS_CHANGES, key=record["site_id"].encode(),
                         value=codec.encode("SiteAncestry", record))
    bad = list(poison)
    every = max(1, len(sc.readings) // (len(bad) + 1))
    for i, record in enumerate(sc.readings):
        producer.produce(TELEMETRY_RAW, key=record["site_id"].encode(),
                         value=codec.encode("SiteTelemetry", record))
        if bad and i % every == every - 1:
            key, value = bad.pop()
            producer.produce(TELEMETRY_RAW, key=key, value=value)
        if i % 5000 == 0:
            producer.poll(0)
    for key, value in bad:
        producer.produce(TELEMETRY_RAW, key=key, value=value)
    producer.flush(30)


def produce_too_late(settings: Settings, sc: Scenario) -> None:
    codec = packaged_codec()
    producer = Producer(client_config(settings))
    for record in sc.too_late:
        producer.produce(TELEMETRY_RAW, key=record["site_id"].encode(),
                         value=codec.encode("SiteTelemetry", record))
    producer.flush(30)


def run_with_late_data(settings: Settings, sc: Scenario, recovery: Path, workers: int = 1) -> None:
    """Run to the end of the input, add the too-late readings, and resume to the end again."""
    run_to_end(settings, workers, recovery)
    produce_too_late(settings, sc)
    run_to_end(settings, workers, recovery)


def start(settings: Settings, workers: int = 1, recovery: Path | None = None, tail: bool = False,
          **overrides: str) -> subprocess.Popen[bytes]:
    """Start the dataflow in its own process; it stops by itself at the end of its input unless ``tail``."""
    if recovery is not None:
        ensure_recovery(recovery)
    settings = settings.model_copy(update={"dataflow_tail": tail, "snapshot_interval_s": 1})
    env = {**os.environ, **settings_env(settings), **overrides}
    return subprocess.Popen(dataflow_argv("telemetry", settings, workers, recovery), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def run_to_end(settings: Settings, workers: int = 1, recovery: Path | None = None, timeout_s: float = 180,
               **overrides: str) -> None:
    process = start(settings, workers, recovery, False, **overrides)
    output, _ = process.communicate(timeout=timeout_s)
    assert process.returncode == 0, output.decode(errors="replace")[-3000:]


def run_processes_to_end(settings: Settings, processes: int, timeout_s: float = 180) -> None:
    """The dataflow as a cluster of ``processes`` processes (no recovery), each until its input ends."""
    bounded = settings.model_copy(update={"dataflow_tail": False})
    env = {**os.environ, **settings_env(bounded)}
    addresses = [f"127.0.0.1:{free_port()}" for _ in range(processes)]
    running = [subprocess.Popen(dataflow_argv("telemetry", bounded, 1, None, i, addresses), env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for i in range(processes)]
    for process in running:
        output, _ = process.communicate(timeout=timeout_s)
        assert process.returncode == 0, output.decode(errors="replace")[-3000:]


def live_nodes(settings: Settings) -> dict[str, dict[str, Any]]:
    """Every ``node:{id}`` aggregate hash in Redis, numbers as floats."""
    client = redis.Redis.from_url(settings.redis)
    hashes = aggregate_hashes(client)
    client.close()
    return {node: {k: _number(v) for k, v in fields.items()} for node, fields in hashes.items()}


def live_sites(settings: Settings) -> dict[str, dict[str, str]]:
    client = redis.Redis.from_url(settings.redis, decode_responses=True)
    sites = {str(key).removeprefix("site:"): {str(k): str(v) for k, v in client.hgetall(key).items()}
             for key in client.scan_iter("site:*", count=1000)}
    client.close()
    return sites


def _number(value: str) -> Any:
    try:
        return float(value)
    except ValueError:
        return value


def minute_rows(settings: Settings, table: str, key: str) -> dict[tuple[str, int], dict[str, Any]]:
    """Rows of ``site_minute``/``node_minute`` as ClickHouse keeps them (FINAL: replaced rows merged)."""
    client = connect(settings)
    result = client.query(f"SELECT * FROM {settings.clickhouse_database}.{table} FINAL")
    rows = {}
    for row in result.named_results():
        minute = row["minute"]  # naive datetimes are UTC (clickhouse-connect drops the zone)
        aware = minute if minute.tzinfo else minute.replace(tzinfo=UTC)
        rows[(row[key], int(aware.timestamp() * 1000))] = dict(row)
    client.close()
    return rows


def node_minute_versions(settings: Settings, node_id: str) -> list[tuple[Any, ...]]:
    """Every row written for ``node_id``'s minutes, each version apart (no FINAL), oldest minute and
    version first: (minute, expected sites, reporting sites, version). For a failure message: it says
    whether a complete row was ever written, and in which order the rows came."""
    client = connect(settings)
    result = client.query(f"SELECT minute, expected_sites, reporting_sites, version FROM "
                          f"{settings.clickhouse_database}.node_minute WHERE node_id = %(node)s "
                          "ORDER BY minute, version", parameters={"node": node_id})
    client.close()
    return [tuple(row) for row in result.result_rows]


def reset_outputs(settings: Settings) -> None:
    """Forget what a run wrote (Redis twins and aggregates, minute tables), keeping the topics."""
    client = redis.Redis.from_url(settings.redis)
    client.flushdb()
    client.close()
    history = connect(settings)
    for table in ("site_minute", "node_minute", "site_hour", "node_hour", "site_day", "node_day"):
        history.command(f"TRUNCATE TABLE {settings.clickhouse_database}.{table}")
    history.close()


def read_topic(settings: Settings, topic: str, idle_s: float = 3.0) -> list[Any]:
    """Every message on ``topic`` (assign mode, from the beginning, until it has been idle a while)."""
    consumer = Consumer(client_config(settings, **{"group.id": f"read-{time.time_ns()}",
                                                   "enable.auto.commit": False}))
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    messages = []
    last = time.monotonic()
    while time.monotonic() - last < idle_s:
        msg = consumer.poll(0.2)
        if msg is None or msg.error():
            continue
        messages.append(msg)
        last = time.monotonic()
    consumer.close()
    return messages


def read_to_end(settings: Settings, topic: str, timeout_s: float = 60.0) -> list[Any]:
    """Every message on ``topic`` up to the end of each partition (assign mode, from the beginning).

    For a topic whose writers are done (a finished dataflow, a flushed producer): it stops as each
    partition reports its end, as the bounded dataflows' source does, instead of waiting for the topic
    to stay idle a while (:func:`read_topic`, for topics that are still being written).
    """
    config = {"group.id": f"read-{time.time_ns()}", "enable.auto.commit": False, "enable.partition.eof": True}
    consumer = Consumer(client_config(settings, **config))
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    ended: set[int] = set()
    messages = []
    deadline = time.monotonic() + timeout_s
    while len(ended) < len(partitions):
        assert time.monotonic() < deadline, f"{topic} was not read to its end within {timeout_s} s"
        for msg in consumer.consume(1000, 0.2):
            error = msg.error()
            if error is None:
                messages.append(msg)
            elif error.code() == KafkaError._PARTITION_EOF:
                ended.add(int(msg.partition() or 0))
    consumer.close()
    return messages


def committed_offsets(settings: Settings, group: str, topic: str) -> dict[int, int]:
    """The group's committed offset per partition of ``topic``, as lag tools read them (none: absent)."""
    client = admin(settings)
    partitions = client.list_topics(topic, timeout=30).topics[topic].partitions
    request = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in partitions])
    answer = client.list_consumer_group_offsets([request])[group].result()
    return {tp.partition: tp.offset for tp in answer.topic_partitions if tp.offset >= 0}


def log_ends(settings: Settings, topic: str) -> dict[int, int]:
    """The high watermark of every partition of ``topic`` (on Tansu a lower bound: last batch's base + 1)."""
    consumer = Consumer(client_config(settings, **{"group.id": f"ends-{time.time_ns()}"}))
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    ends = {p: int(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1])
            for p in partitions}
    consumer.close()
    return ends
