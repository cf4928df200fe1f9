"""Typed branches of a step's output: one stream per kind of result, told apart by type.

A stateful step emits a union of result types (a twin write, a Kafka record, a
history row...). Its step function splits that output into a frozen dataclass
of typed streams, the way Bytewax's own operators return ``BranchOut`` or
``WindowOut``: the wiring names each branch it uses, a branch that does not
exist is an error when the flow is built, and no result is routed by a string
that could be misspelt.
"""

from __future__ import annotations

from typing import Any, TypeVar

import bytewax.operators as op
from bytewax.dataflow import Stream
from bytewax.operators import KeyedStream

T = TypeVar("T")


def values_of(step_id: str, up: KeyedStream[Any], kind: type[T]) -> Stream[T]:
    """The values of ``up`` that are instances of ``kind``, keys dropped."""
    return op.filter_map(step_id, up, lambda item: item[1] if isinstance(item[1], kind) else None)


def keyed_values_of(step_id: str, up: KeyedStream[Any], kind: type[T]) -> KeyedStream[T]:
    """The items of ``up`` whose values are instances of ``kind``, keys kept."""
    return op.filter_map(step_id, up, lambda item: item if isinstance(item[1], kind) else None)
