"""Source partitions named ``{topic}-{index}`` spread each topic evenly over Bytewax's workers.

Bytewax gives each source partition to the worker with the fewest so far, in the order of the
partition names. Named ``{index}-{topic}``, the telemetry flow's two topics interleave and, on two
workers, one worker read 5 of the 6 ``telemetry.raw`` partitions. The real assignment (two
workers of ``cluster_main``) decides here, on the names :class:`BatchedKafkaSource` would list.
"""

from __future__ import annotations

import threading
from collections import Counter

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.testing import TestingSink, cluster_main
from typing_extensions import override

from core.topics import ASSETS_CHANGES, TELEMETRY_RAW
from operators.kafka_batches import part_name, partition_of


class _Once(StatefulSourcePartition[tuple[str, str], None]):
    def __init__(self, name: str) -> None:
        self._name = name
        self._done = False

    @override
    def next_batch(self) -> list[tuple[str, str]]:
        if self._done:
            raise StopIteration
        self._done = True
        return [(self._name, threading.current_thread().name)]

    @override
    def snapshot(self) -> None:
        return None


class _Named(FixedPartitionedSource[tuple[str, str], None]):
    def __init__(self, names: list[str]) -> None:
        self._names = names

    @override
    def list_parts(self) -> list[str]:
        return self._names

    @override
    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _Once:
        return _Once(for_part)


def _telemetry_parts_per_worker(by_topic: bool) -> list[int]:
    names = ([part_name(TELEMETRY_RAW, i, by_topic) for i in range(6)]
             + [part_name(ASSETS_CHANGES, i, by_topic) for i in range(4)])
    built: list[tuple[str, str]] = []
    flow = Dataflow("assignment")
    op.output("out", op.input("in", flow, _Named(names)), TestingSink(built))
    cluster_main(flow, [], 0, worker_count_per_proc=2)  # type: ignore[no-untyped-call]
    workers = Counter(worker for name, worker in built if partition_of(name, by_topic)[0] == TELEMETRY_RAW)
    return sorted(workers.values())


def test_named_by_topic_each_worker_reads_half_of_the_telemetry_partitions() -> None:
    assert _telemetry_parts_per_worker(by_topic=True) == [3, 3]


def test_named_by_index_first_the_topics_interleave_and_one_worker_reads_most() -> None:
    assert _telemetry_parts_per_worker(by_topic=False) == [1, 5]


def test_a_name_gives_back_its_topic_and_partition_either_way() -> None:
    for by_topic in (True, False):
        assert partition_of(part_name("plans.site", 11, by_topic), by_topic) == ("plans.site", 11)
