"""The telemetry dataflow: ``telemetry.raw`` + ``assets.changes`` -> live twin, rollups, history.

Run it as ``python -m bytewax.run dataflows.telemetry:flow`` (add ``-w``/``-i``/``-a``
for workers and processes, ``-r DIR -s S -b 0`` for recovery); every setting comes
from ``VPP_*`` (see :class:`core.config.Settings`).

    kafka (telemetry.raw, assets.changes)
      -> decode, check plausibility, group by site shard
                                                (undecodable or implausible records -> telemetry.dlq)
      -> sites: one Shard per key               (readings beyond the site's rating -> telemetry.dlq,
                                                 twins -> Redis site:{id}, transitions -> twin.status,
                                                 closed minutes -> ClickHouse site_minute)
      -> nodes: one NodeGroup per key           (aggregates -> Redis node:{id} and aggregates.live,
                                                 node minutes -> ClickHouse node_minute)
"""

from __future__ import annotations

from functools import partial

import bytewax.operators as op
from bytewax.dataflow import Dataflow

from core.config import Settings
from core.topics import ASSETS_CHANGES, TELEMETRY_RAW
from dataflows.outputs import kafka_output, keyed_values_of, values_of
from operators.kafka_batches import BatchedKafkaSource
from operators.records import DLQ_KEY, ShardBatch, route
from operators.sinks import HistorySink, RedisTwinSink
from operators.telemetry_steps import NodeGroupLogic, ShardLogic


def build_flow(settings: Settings) -> Dataflow:
    """The telemetry dataflow wired to the parts ``settings`` names."""
    flow = Dataflow("telemetry")
    brokers = [settings.kafka]
    source = BatchedKafkaSource(brokers, [TELEMETRY_RAW, ASSETS_CHANGES], tail=settings.dataflow_tail,
                                batch_size=settings.kafka_batch_size)
    messages = op.input("kafka-in", flow, source)
    decode = partial(route, shards=settings.telemetry_shards, rules=settings.plausibility())
    routed = op.flat_map_batch("decode", messages, decode)
    dead = op.branch("dead-letters", routed, lambda item: item[0] == DLQ_KEY)

    shard_input = op.filter_map("shard-input", dead.falses,
                                lambda item: item if isinstance(item[1], ShardBatch) else None)
    sites = op.stateful_batch("sites", shard_input, ShardLogic.builder(settings))
    node_input = op.filter_map("node-changes", sites, partial(keyed_values_of, "nodes"))
    nodes = op.stateful_batch("nodes", node_input, NodeGroupLogic.builder(settings))
    results = op.merge("results", sites, nodes)

    kafka_output(dead.trues, results, brokers)

    redis_out = op.filter_map("redis-writes", results, partial(values_of, "redis"))
    op.output("redis", redis_out, RedisTwinSink(settings.redis))

    history_out = op.filter_map("history-rows", results, partial(keyed_values_of, "history"))
    op.output("clickhouse", history_out, HistorySink(settings))
    return flow


flow = build_flow(Settings())
