"""The control dataflow: ``dispatch.requests`` + ``commands.acks`` -> commands, corrections, statuses.

Run it as ``python -m bytewax.run dataflows.control:flow`` (recovery flags as for
the telemetry flow); every setting comes from ``VPP_*`` (see
:class:`core.config.Settings`, ``control_*``).

    kafka (dispatch.requests, commands.acks,  + twin reads (Redis, on the input's own thread, of what
           its own commands.site read back)     the dispatches step asks for: operators.twin_feed)
      -> decode, all under one key            (bad records -> telemetry.dlq; the commands read back
                                               are the command_log's SENT rows)
      -> dispatches: one Arbiter holds every  (plans from the twin reads; a site follows at most one
         Dispatch                              dispatch; forged acks, reused ids -> telemetry.dlq;
                                               commands -> commands.site, statuses -> dispatch.status,
                                               Redis dispatch:{id}, ClickHouse dispatch_log / command_log)

:func:`build_flow` takes the source and sinks as arguments, so tests run the same
wiring in-process on Bytewax's ``TestingSource`` and ``TestingSink``, and the
twin reader, so they plan from a twin of their own instead of Redis.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import bytewax.operators as op
import redis
from bytewax.connectors.kafka import KafkaSink
from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource
from bytewax.outputs import Sink

from core import kafka
from core.config import Settings
from core.logs import configure_logging
from core.topics import COMMANDS_ACKS, COMMANDS_SITE, CONTROL_DATAFLOW_GROUP, DISPATCH_REQUESTS
from dataflows.probes import start_probes
from operators import control_steps as steps
from operators.kafka_batches import BatchedKafkaSource, Polled
from operators.records import KafkaOut
from operators.sinks import DispatchStatusSink, HistoryRow, HistorySink, StatusWrite
from operators.twin_feed import TwinDemand, WithTwins
from operators.twin_reader import RedisTwinReader, TwinReader


@dataclass(frozen=True)
class ControlSinks:
    """Where the flow's results go: Kafka records, Redis status writes, ClickHouse journal rows."""

    kafka: Sink[KafkaOut]
    redis: Sink[StatusWrite]
    history: Sink[tuple[str, HistoryRow]]

    @classmethod
    def of(cls, settings: Settings) -> ControlSinks:
        """The real sinks of the parts ``settings`` names."""
        return cls(KafkaSink([settings.kafka], topic=None, add_config=kafka.library_logs()),
                   DispatchStatusSink(settings.redis), HistorySink(settings, partitions=1, flush_rows=5_000))


def kafka_source(settings: Settings) -> BatchedKafkaSource:
    """The flow's real input; a short fetch wait, so a request does not sit in the broker for
    librdkafka's default 500 ms."""
    return BatchedKafkaSource([settings.kafka], [DISPATCH_REQUESTS, COMMANDS_ACKS, COMMANDS_SITE],
                              tail=settings.dataflow_tail, batch_size=settings.kafka_batch_size,
                              extra={"fetch.wait.max.ms": 20}, group_id=CONTROL_DATAFLOW_GROUP)


def redis_reader(settings: Settings) -> Callable[[], TwinReader]:
    """The real twin reader (made on the thread that reads, with a client of its own)."""
    return lambda: RedisTwinReader(redis.Redis.from_url(settings.redis))


def build_flow(settings: Settings, source: FixedPartitionedSource[Polled, Any] | None = None,
               sinks: ControlSinks | None = None, reader: Callable[[], TwinReader] | None = None) -> Dataflow:
    """The control dataflow; the real Kafka source, sinks and Redis twin unless others are given.

    ``reader`` makes the twin reader the input reads with, every ``control_tick_s``, what the
    dispatches step asks for (one :class:`~operators.twin_feed.TwinDemand` per built flow).
    """
    flow = Dataflow("control")
    sinks = sinks or ControlSinks.of(settings)
    demand = TwinDemand()
    with_twins = WithTwins(source or kafka_source(settings), demand, reader or redis_reader(settings),
                           settings.control_tick_s)
    items = op.input("kafka-in", flow, with_twins)
    decoded = steps.decode("decode", items)
    dispatches = steps.dispatches("dispatches", decoded.events, settings, demand)

    op.output("kafka", op.merge("kafka-out", decoded.dead_letters, dispatches.kafka), sinks.kafka)
    op.output("redis", dispatches.statuses, sinks.redis)
    op.output("clickhouse", dispatches.journal, sinks.history)
    return flow


def __getattr__(name: str) -> Any:
    """``flow`` for ``python -m bytewax.run dataflows.control:flow``, built from the environment when read."""
    if name == "flow":
        settings = Settings()
        configure_logging(settings)
        start_probes(settings, settings.control_probe_port)
        return build_flow(settings)
    raise AttributeError(name)
