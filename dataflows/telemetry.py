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

:func:`build_flow` takes the source and sinks as arguments, so tests run the same
wiring in-process on Bytewax's ``TestingSource`` and ``TestingSink``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.outputs import Sink

from core import kafka
from core.config import Settings
from core.logs import configure_logging
from core.topics import ASSETS_CHANGES, TELEMETRY_DATAFLOW_GROUP, TELEMETRY_RAW
from dataflows.collector import collect_less_often
from dataflows.probes import start_probes
from operators import telemetry_steps as steps
from operators.kafka_batches import BatchedKafkaSource, Polled
from operators.kafka_sink import EpochKafkaSink
from operators.records import KafkaOut
from operators.sinks import HistoryRow, HistorySink, RedisTwinSink, TwinWrite


@dataclass(frozen=True)
class TelemetrySinks:
    """Where the flow's results go: Kafka records, Redis twin writes, ClickHouse minute rows.

    The Kafka records come keyed by :data:`KAFKA_OUT_KEY` (the real sink waits for the broker
    at each epoch's end, which only a partitioned sink can).
    """

    kafka: Sink[tuple[str, KafkaOut]]
    redis: Sink[TwinWrite]
    history: Sink[tuple[str, HistoryRow]]

    @classmethod
    def of(cls, settings: Settings) -> TelemetrySinks:
        """The real sinks of the parts ``settings`` names."""
        return cls(EpochKafkaSink([settings.kafka], add_config=kafka.library_logs()),
                   RedisTwinSink(settings.redis), HistorySink(settings))


#: The key of every Kafka record on its way to the sink: one sink partition (producer) takes them all.
KAFKA_OUT_KEY = "kafka"


def kafka_source(settings: Settings) -> BatchedKafkaSource:
    """The flow's real input: both topics, offsets in the recovery store."""
    return BatchedKafkaSource([settings.kafka], [TELEMETRY_RAW, ASSETS_CHANGES], tail=settings.dataflow_tail,
                              batch_size=settings.kafka_batch_size, group_id=TELEMETRY_DATAFLOW_GROUP,
                              by_topic=True, extra={"fetch.wait.max.ms": settings.telemetry_fetch_wait_ms})


def build_flow(settings: Settings, source: Source[Polled] | None = None,
               sinks: TelemetrySinks | None = None) -> Dataflow:
    """The telemetry dataflow; the real Kafka source and sinks unless others are given."""
    flow = Dataflow("telemetry")
    sinks = sinks or TelemetrySinks.of(settings)
    polls = op.input("kafka-in", flow, source or kafka_source(settings))
    decoded = steps.decode("decode", polls, settings)
    sites = steps.sites("sites", decoded.batches, settings)
    nodes = steps.nodes("nodes", sites.node_changes, settings)

    records = op.merge("kafka-out", decoded.dead_letters, sites.kafka, nodes.kafka)
    op.output("kafka", op.key_on("kafka-keyed", records, lambda _: KAFKA_OUT_KEY), sinks.kafka)
    op.output("redis", op.merge("redis-out", sites.twins, nodes.aggregates), sinks.redis)
    op.output("clickhouse", op.merge("history-out", sites.minutes, nodes.minutes), sinks.history)
    return flow


def __getattr__(name: str) -> Any:
    """``flow`` for ``bytewax.run dataflows.telemetry:flow``, built from the environment when read."""
    if name == "flow":
        collect_less_often()
        settings = Settings()
        configure_logging(settings)
        start_probes(settings, settings.telemetry_probe_port)
        return build_flow(settings)
    raise AttributeError(name)
