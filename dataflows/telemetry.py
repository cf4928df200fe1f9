"""The telemetry dataflow: ``telemetry.raw`` + ``assets.changes`` -> live twin, rollups, history.

Run it as ``python -m bytewax.run dataflows.telemetry:flow`` (add ``-w``/``-i``/``-a``
for workers and processes, ``-r DIR -s S -b 0`` for recovery); every setting comes
from ``VPP_*`` (see :class:`vpp.config.Settings`).

    kafka (telemetry.raw, assets.changes)
      -> decode, group by site shard            (bad records -> telemetry.dlq)
      -> sites: one Shard per key               (twins -> Redis site:{id}, transitions -> twin.status,
                                                 closed minutes -> ClickHouse site_minute)
      -> nodes: one NodeGroup per key           (aggregates -> Redis node:{id} and aggregates.live,
                                                 node minutes -> ClickHouse node_minute)
"""

from __future__ import annotations

from functools import partial
from typing import Any

import bytewax.operators as op
from bytewax.connectors.kafka import KafkaSink, KafkaSinkMessage
from bytewax.dataflow import Dataflow

from operators.kafka_batches import BatchedKafkaSource
from operators.records import DLQ_KEY, ShardBatch, route
from operators.sinks import HistorySink, RedisTwinSink
from operators.telemetry_steps import Emitted, NodeGroupLogic, ShardLogic
from vpp.config import Settings
from vpp.topics import ASSETS_CHANGES, TELEMETRY_RAW


def _of_kind(kind: str, item: tuple[str, Emitted]) -> tuple[str, Any] | None:
    """``(key, value)`` of the results bound for ``kind`` (re-keyed for the next keyed step)."""
    emitted = item[1]
    return (emitted.key, emitted.value) if emitted.kind == kind else None


def build_flow(settings: Settings) -> Dataflow:
    """The telemetry dataflow wired to the parts ``settings`` names."""
    flow = Dataflow("telemetry")
    brokers = [settings.kafka]
    source = BatchedKafkaSource(brokers, [TELEMETRY_RAW, ASSETS_CHANGES], tail=settings.dataflow_tail,
                                batch_size=settings.kafka_batch_size)
    messages = op.input("kafka-in", flow, source)
    routed = op.flat_map_batch("decode", messages, partial(route, shards=settings.telemetry_shards))
    dead = op.branch("dead-letters", routed, lambda item: item[0] == DLQ_KEY)

    shard_input = op.filter_map("shard-input", dead.falses,
                                lambda item: item if isinstance(item[1], ShardBatch) else None)
    sites = op.stateful_batch("sites", shard_input, ShardLogic.builder(settings))
    node_input = op.filter_map("node-changes", sites, partial(_of_kind, "nodes"))
    nodes = op.stateful_batch("nodes", node_input, NodeGroupLogic.builder(settings))
    results = op.merge("results", sites, nodes)

    kafka_out = op.merge(
        "kafka-out",
        op.filter_map("dlq-records", dead.trues,
                      lambda item: item[1] if isinstance(item[1], KafkaSinkMessage) else None),
        op.filter_map("kafka-records", results,
                      lambda item: item[1].value if item[1].kind == "kafka" else None),
    )
    op.output("kafka", kafka_out, KafkaSink(brokers, topic=None))

    redis_out = op.filter_map("redis-writes", results,
                              lambda item: item[1].value if item[1].kind == "redis" else None)
    op.output("redis", redis_out, RedisTwinSink(settings.redis))

    history_out = op.filter_map("history-rows", results, partial(_of_kind, "history"))
    op.output("clickhouse", history_out, HistorySink(settings))
    return flow


flow = build_flow(Settings())
