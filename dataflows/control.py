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

from dataclasses import dataclass
from functools import partial
from typing import Any

import bytewax.operators as op
from bytewax.connectors.kafka import KafkaSink
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.outputs import Sink

from core.config import Settings
from core.topics import COMMANDS_ACKS, DISPATCH_REQUESTS
from dataflows.outputs import kafka_output, keyed_values_of, values_of
from operators.control_steps import ControlLogic, Received, decode_control
from operators.kafka_batches import BatchedKafkaSource, Polled
from operators.records import DLQ_KEY, KafkaOut
from operators.sinks import DispatchStatusSink, HistoryRow, HistorySink, StatusWrite


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


def build_flow(settings: Settings, source: Source[Polled] | None = None,
               sinks: ControlSinks | None = None) -> Dataflow:
    """The control dataflow; the real Kafka source and sinks unless others are given."""
    flow = Dataflow("control")
    sinks = sinks or ControlSinks.of(settings)
    decoded = op.flat_map_batch("decode", op.input("kafka-in", flow, source or kafka_source(settings)),
                                decode_control)
    dead = op.branch("dead-letters", decoded, lambda item: item[0] == DLQ_KEY)
    events = op.filter_map("events", dead.falses,
                           lambda item: item if isinstance(item[1], Received) else None)
    results = op.stateful_batch("dispatches", events, ControlLogic.builder(settings))

    kafka_output(dead.trues, results, sinks.kafka)
    op.output("redis", op.filter_map("status-writes", results, partial(values_of, "redis")), sinks.redis)
    op.output("clickhouse", op.filter_map("journal-rows", results, partial(keyed_values_of, "history")),
              sinks.history)
    return flow


def __getattr__(name: str) -> Any:
    """``flow`` for ``python -m bytewax.run dataflows.control:flow``, built from the environment when read."""
    if name == "flow":
        return build_flow(Settings())
    raise AttributeError(name)
