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
"""

from __future__ import annotations

from functools import partial

import bytewax.operators as op
from bytewax.dataflow import Dataflow

from core.config import Settings
from core.topics import COMMANDS_ACKS, DISPATCH_REQUESTS
from dataflows.outputs import kafka_output, keyed_values_of, values_of
from operators.control_steps import ControlLogic, Received, decode_control
from operators.kafka_batches import BatchedKafkaSource
from operators.records import DLQ_KEY
from operators.sinks import DispatchStatusSink, HistorySink


def build_flow(settings: Settings) -> Dataflow:
    """The control dataflow wired to the parts ``settings`` names."""
    flow = Dataflow("control")
    brokers = [settings.kafka]
    # A short fetch wait: a request should not sit in the broker for librdkafka's default 500 ms.
    source = BatchedKafkaSource(brokers, [DISPATCH_REQUESTS, COMMANDS_ACKS], tail=settings.dataflow_tail,
                                batch_size=settings.kafka_batch_size, extra={"fetch.wait.max.ms": 20})
    decoded = op.flat_map_batch("decode", op.input("kafka-in", flow, source), decode_control)
    dead = op.branch("dead-letters", decoded, lambda item: item[0] == DLQ_KEY)
    events = op.filter_map("events", dead.falses,
                           lambda item: item if isinstance(item[1], Received) else None)
    results = op.stateful_batch("dispatches", events, ControlLogic.builder(settings))

    kafka_output(dead.trues, results, brokers)
    op.output("redis", op.filter_map("status-writes", results, partial(values_of, "redis")),
              DispatchStatusSink(settings.redis))
    op.output("clickhouse", op.filter_map("journal-rows", results, partial(keyed_values_of, "history")),
              HistorySink(settings, partitions=1, flush_rows=5_000))
    return flow


flow = build_flow(Settings())
