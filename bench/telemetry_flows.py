"""The baseline dataflow of ``vpp bench telemetry``: the same input and decode step, nothing after.

Its rate is what Kafka, Bytewax and the codec allow on this machine; the real
flow's rate against it shows what the twin, rollups and sinks cost. Its process
runs the garbage collector as the real flow's does (:mod:`dataflows.collector`), so the
two differ only in the steps after decoding.
"""

from __future__ import annotations

from functools import partial

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from typing_extensions import override

from core.config import Settings
from core.topics import ASSETS_CHANGES, TELEMETRY_RAW
from dataflows.collector import collect_less_often
from operators.kafka_batches import BatchedKafkaSource
from operators.records import route


class _Discard(StatelessSinkPartition[object]):
    @override
    def write_batch(self, items: list[object]) -> None:
        """Drop everything: the baseline measures reading and decoding only."""


class DiscardSink(DynamicSink[object]):
    @override
    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Discard:
        return _Discard()


def build_decode_only(settings: Settings) -> Dataflow:
    flow = Dataflow("telemetry-decode-only")
    source = BatchedKafkaSource([settings.kafka], [TELEMETRY_RAW, ASSETS_CHANGES],
                                tail=settings.dataflow_tail, batch_size=settings.kafka_batch_size)
    decode = partial(route, shards=settings.telemetry_shards, rules=settings.plausibility())
    routed = op.flat_map_batch("decode", op.input("kafka-in", flow, source), decode)
    op.output("discard", routed, DiscardSink())
    return flow


collect_less_often()
decode_only = build_decode_only(Settings())
