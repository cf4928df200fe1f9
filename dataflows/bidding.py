"""The bidding orchestrator: ``workflow.events`` (requests) + ``workflow.results`` -> tasks and the journal.

Run it as ``python -m bytewax.run dataflows.bidding:flow`` (recovery flags as for the other
flows, :mod:`vpp.dataflows`); settings come from ``VPP_*``.

    kafka (workflow.events: `requested`,  -> decode, keyed by workflow id  (bad records -> telemetry.dlq)
           workflow.results)               -> orchestrate: one bidding.workflow run per key
                                              (journal -> workflow.events, tasks -> workflow.tasks;
                                               deadlines and time-outs by notify_at)

The work itself is done by the worker pool (``vpp bid worker``, :mod:`vpp.bid_worker`), a
consumer group on ``workflow.tasks``. :func:`build_flow` takes the source and sink as arguments,
so tests can run the same wiring on Bytewax's ``TestingSource`` and ``TestingSink``.
"""

from __future__ import annotations

from typing import Any

import bytewax.operators as op
from bytewax.connectors.kafka import KafkaSink
from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource
from bytewax.outputs import Sink

from core import kafka
from core.config import Settings
from core.topics import BIDDING_DATAFLOW_GROUP, WORKFLOW_EVENTS, WORKFLOW_RESULTS
from dataflows import bidding_steps as steps
from dataflows.probes import start_probes
from operators.kafka_batches import BatchedKafkaSource, Polled
from operators.records import KafkaOut


def kafka_source(settings: Settings) -> BatchedKafkaSource:
    """The flow's real input, with a short fetch wait: a result should not sit in the broker."""
    return BatchedKafkaSource([settings.kafka], [WORKFLOW_EVENTS, WORKFLOW_RESULTS],
                              tail=settings.dataflow_tail, batch_size=settings.kafka_batch_size,
                              extra={"fetch.wait.max.ms": 20}, group_id=BIDDING_DATAFLOW_GROUP)


def build_flow(settings: Settings, source: FixedPartitionedSource[Polled, Any] | None = None,
               sink: Sink[KafkaOut] | None = None) -> Dataflow:
    """The bidding orchestrator; the real Kafka source and sink unless others are given."""
    flow = Dataflow("bidding")
    polls = op.input("kafka-in", flow, source or kafka_source(settings))
    decoded = steps.decode("decode", polls)
    out = steps.orchestrate("workflows", decoded.events)
    op.output("kafka", op.merge("kafka-out", decoded.dead_letters, out),
              sink or KafkaSink([settings.kafka], topic=None, add_config=kafka.library_logs()))
    return flow


def __getattr__(name: str) -> Any:
    """``flow`` for ``python -m bytewax.run dataflows.bidding:flow``, built from the environment when read."""
    if name == "flow":
        settings = Settings()
        start_probes(settings, settings.bidding_probe_port)
        return build_flow(settings)
    raise AttributeError(name)
