"""The control dataflow: ``dispatch.requests`` + ``commands.acks`` -> commands, corrections, statuses.

Run it as ``python -m bytewax.run dataflows.control:flow`` (recovery flags as for
the telemetry flow); every setting comes from ``VPP_*`` (see
:class:`core.config.Settings`, ``control_*``).

    kafka (dispatch.requests, commands.acks)
      -> decode, all under one key            (bad records -> telemetry.dlq)
      -> dispatches: one Arbiter holds every  (reads the live twin in Redis; a site follows at most one
         Dispatch                              dispatch; forged acks, reused ids -> telemetry.dlq;
                                               commands -> commands.site, statuses -> dispatch.status,
                                               Redis dispatch:{id}, ClickHouse dispatch_log / command_log)

:func:`build_flow` takes the source and sinks as arguments, so tests run the same
wiring in-process on Bytewax's ``TestingSource`` and ``TestingSink``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import bytewax.operators as op
from bytewax.connectors.kafka import KafkaSink
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.outputs import Sink

from core.config import Settings
from core.topics import COMMANDS_ACKS, DISPATCH_REQUESTS
from operators import control_steps as steps
from operators.kafka_batches import BatchedKafkaSource, Polled
from operators.records import KafkaOut
from operators.sinks import DispatchStatusSink, HistoryRow, HistorySink, StatusWrite
from operators.twin_reader import TwinReader


@dataclass(frozen=True)
class ControlSinks:
    """Where the flow's results go: Kafka records, Redis status writes, ClickHouse journal rows."""

    kafka: Sink[KafkaOut]
    redis: Sink[StatusWrite]
    history: Sink[tuple[str, HistoryRow]]

    @classmethod
    def of(cls, settings: Settings) -> ControlSinks:
        """The real sinks of the parts ``settings`` names."""
        return cls(KafkaSink([settings.kafka], topic=None), DispatchStatusSink(settings.redis),
                   HistorySink(settings, partitions=1, flush_rows=5_000))


def kafka_source(settings: Settings) -> BatchedKafkaSource:
    """The flow's real input; a short fetch wait, so a request does not sit in the broker for
    librdkafka's default 500 ms."""
    return BatchedKafkaSource([settings.kafka], [DISPATCH_REQUESTS, COMMANDS_ACKS],
                              tail=settings.dataflow_tail, batch_size=settings.kafka_batch_size,
                              extra={"fetch.wait.max.ms": 20})


def build_flow(settings: Settings, source: Source[Polled] | None = None, sinks: ControlSinks | None = None,
               reader: Callable[[], TwinReader] | None = None) -> Dataflow:
    """The control dataflow; the real Kafka source, sinks and Redis twin unless others are given."""
    flow = Dataflow("control")
    sinks = sinks or ControlSinks.of(settings)
    polls = op.input("kafka-in", flow, source or kafka_source(settings))
    decoded = steps.decode("decode", polls)
    dispatches = steps.dispatches("dispatches", decoded.events, settings, reader)

    op.output("kafka", op.merge("kafka-out", decoded.dead_letters, dispatches.kafka), sinks.kafka)
    op.output("redis", dispatches.statuses, sinks.redis)
    op.output("clickhouse", dispatches.journal, sinks.history)
    return flow


def __getattr__(name: str) -> Any:
    """``flow`` for ``python -m bytewax.run dataflows.control:flow``, built from the environment when read."""
    if name == "flow":
        return build_flow(Settings())
    raise AttributeError(name)
