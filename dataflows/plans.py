"""The plans dataflow: ``plans.site`` + ``assets.changes`` + ``twin.status`` -> aggregate plans.

Run it as ``python -m bytewax.run dataflows.plans:flow`` (recovery flags as for
the telemetry flow); every setting comes from ``VPP_*`` (see
:class:`core.config.Settings`, ``plans_*``).

    kafka (plans.site, assets.changes, twin.status)
      -> decode, all under one key           (undecodable, wrong key, implausible issued_at -> telemetry.dlq)
      -> plans: one PlanDesk                  (plans beyond the site's limits or reserve, unknown site,
                                               NaN -> telemetry.dlq; accepted plans -> ClickHouse site_plan;
                                               aggregate plans of the nodes that changed, in every
                                               hierarchy -> Redis plan:node:{id}, plans.node (NodePlan),
                                               ClickHouse node_plan)

:func:`build_flow` takes the source and sinks as arguments, so tests can run the same
wiring in-process on Bytewax's ``TestingSource`` and ``TestingSink``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import bytewax.operators as op
from bytewax.connectors.kafka import KafkaSink
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.outputs import Sink

from core import kafka
from core.config import Settings
from core.topics import ASSETS_CHANGES, PLANS_DATAFLOW_GROUP, PLANS_SITE, TWIN_STATUS
from dataflows import plan_steps as steps
from dataflows.collector import collect_less_often
from dataflows.probes import start_probes
from operators.kafka_batches import BatchedKafkaSource, Polled
from operators.records import KafkaOut
from operators.sinks import HistoryRow, HistorySink, RedisTwinSink, TwinWrite

#: ``site_plan`` rows handed to the history sink's writer thread at a time. A burst's rows go to
#: ClickHouse in chunks while the step works, instead of all at the epoch's end, where the whole flow
#: waits for them (10,000 rows held it 5 s on a loaded machine, in front of the burst's aggregate);
#: in steady operation an epoch has fewer rows, written at its end as before.
HISTORY_ROWS = 2_000


@dataclass(frozen=True)
class PlansSinks:
    """Where the flow's results go: dead letters, Redis plan hashes, ClickHouse plan rows."""

    kafka: Sink[KafkaOut]
    redis: Sink[TwinWrite]
    history: Sink[tuple[str, HistoryRow]]

    @classmethod
    def of(cls, settings: Settings) -> PlansSinks:
        """The real sinks of the parts ``settings`` names."""
        return cls(KafkaSink([settings.kafka], topic=None, add_config=kafka.library_logs()),
                   RedisTwinSink(settings.redis),
                   HistorySink(settings, partitions=1, flush_rows=HISTORY_ROWS))


def kafka_source(settings: Settings) -> BatchedKafkaSource:
    """The flow's real input: the three topics, offsets in the recovery store."""
    return BatchedKafkaSource([settings.kafka], [PLANS_SITE, ASSETS_CHANGES, TWIN_STATUS],
                              tail=settings.dataflow_tail, batch_size=settings.kafka_batch_size,
                              extra={"fetch.wait.max.ms": 20}, group_id=PLANS_DATAFLOW_GROUP)


def build_flow(settings: Settings, source: Source[Polled] | None = None,
               sinks: PlansSinks | None = None) -> Dataflow:
    """The plans dataflow; the real Kafka source and sinks unless others are given."""
    flow = Dataflow("plans")
    sinks = sinks or PlansSinks.of(settings)
    polls = op.input("kafka-in", flow, source or kafka_source(settings))
    decoded = steps.decode("decode", polls, settings)
    desk = steps.plans("plans", decoded.items, settings)

    op.output("kafka", op.merge("kafka-out", decoded.dead_letters, desk.kafka), sinks.kafka)
    op.output("redis", desk.redis, sinks.redis)
    op.output("clickhouse", desk.history, sinks.history)
    return flow


def __getattr__(name: str) -> Any:
    """``flow`` for ``python -m bytewax.run dataflows.plans:flow``, built from the environment when read."""
    if name == "flow":
        collect_less_often()
        settings = Settings()
        start_probes(settings, settings.plans_probe_port)
        return build_flow(settings)
    raise AttributeError(name)
