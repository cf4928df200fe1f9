"""Wiring shared by the dataflows: their results fan out to sinks by the kind they are tagged with."""

from __future__ import annotations

from typing import Any

import bytewax.operators as op
from bytewax.connectors.kafka import KafkaSinkMessage
from bytewax.dataflow import Stream
from bytewax.outputs import Sink

from operators.emitted import Emitted


def values_of(kind: str, item: tuple[str, Emitted]) -> Any:
    """The value of a result bound for ``kind`` (for an unkeyed sink), else None."""
    return item[1].value if item[1].kind == kind else None


def keyed_values_of(kind: str, item: tuple[str, Emitted]) -> tuple[str, Any] | None:
    """``(key, value)`` of a result bound for ``kind`` (for a keyed step or a partitioned sink), else None."""
    emitted = item[1]
    return (emitted.key, emitted.value) if emitted.kind == kind else None


def kafka_output(dead_letters: Stream[tuple[str, Any]], results: Stream[tuple[str, Emitted]],
                 sink: Sink[KafkaSinkMessage[Any, Any]]) -> None:
    """Dead letters and the results tagged "kafka" to Kafka; every message names its own topic."""
    out = op.merge(
        "kafka-out",
        op.filter_map("dlq-records", dead_letters,
                      lambda item: item[1] if isinstance(item[1], KafkaSinkMessage) else None),
        op.filter_map("kafka-records", results, lambda item: values_of("kafka", item)),
    )
    op.output("kafka", out, sink)
