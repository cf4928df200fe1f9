"""A Bytewax worker thread that called :func:`keep_thread_state` keeps its Python thread state.

Two workers of ``cluster_main`` run on threads Bytewax starts from Rust. A step counts its calls in
a ``threading.local``, which lives in the thread state: where the state is made anew for every call
into Python, each count starts again at 1; where it is kept, a thread's counts run 1, 2, 3, ...
"""

from __future__ import annotations

import threading
from collections import defaultdict

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.testing import TestingSink, cluster_main
from typing_extensions import override

from operators.worker_threads import keep_thread_state

ITEMS = 40


class _OneAtATime(StatefulSourcePartition[int, None]):
    """Emits 0..ITEMS-1, one item per call, so each reaches the next step in a call of its own."""

    def __init__(self) -> None:
        self._next = 0

    @override
    def next_batch(self) -> list[int]:
        if self._next == ITEMS:
            raise StopIteration
        self._next += 1
        return [self._next - 1]

    @override
    def snapshot(self) -> None:
        return None


class _Source(FixedPartitionedSource[int, None]):
    def __init__(self, keep: bool) -> None:
        self._keep = keep

    @override
    def list_parts(self) -> list[str]:
        if self._keep:
            keep_thread_state()
        return ["a", "b"]

    @override
    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _OneAtATime:
        return _OneAtATime()


def _counts_per_thread(keep: bool) -> dict[int, list[int]]:
    """Each thread's counts in the order of its calls, by OS thread id."""
    seen = threading.local()

    def count(item: int) -> tuple[int, int]:
        seen.calls = getattr(seen, "calls", 0) + 1
        return threading.get_native_id(), seen.calls

    out: list[tuple[int, int]] = []
    flow = Dataflow("thread-state")
    op.output("out", op.map("count", op.input("in", flow, _Source(keep)), count), TestingSink(out))
    cluster_main(flow, [], 0, worker_count_per_proc=2)  # type: ignore[no-untyped-call]
    per_thread: dict[int, list[int]] = defaultdict(list)
    for thread, calls in out:
        per_thread[thread].append(calls)
    return dict(per_thread)


def test_a_kept_thread_state_carries_thread_locals_from_call_to_call() -> None:
    per_thread = _counts_per_thread(keep=True)
    assert sum(len(counts) for counts in per_thread.values()) == 2 * ITEMS
    assert threading.get_native_id() not in per_thread  # the workers' own threads, not this one
    for counts in per_thread.values():
        assert counts == list(range(1, len(counts) + 1))


def test_without_it_a_worker_thread_gets_a_new_state_for_each_call() -> None:
    """What the module works around (if Bytewax starts keeping states itself, this fails: then
    :func:`keep_thread_state` is no longer needed)."""
    per_thread = _counts_per_thread(keep=False)
    assert max(len(counts) for counts in per_thread.values()) > 1
    assert all(set(counts) == {1} for counts in per_thread.values())
