"""The twin as an input of the control dataflow: read off the worker thread, emitted as items.

The control step must not wait on Redis: a pipelined read of 10,000 twins held
the Bytewax worker (and every other step on it) for tens of milliseconds each
tick. Instead the step says what it needs (a :class:`Want` per dispatch, in a
:class:`TwinDemand` given to both the step and the source), a thread of the
source's first partition reads it through a
:class:`~operators.twin_reader.TwinReader` every ``control_tick_s`` (at once when
the demand changes), and the partition emits each answer as a :class:`TwinRead`
item next to the Kafka records. The control step joins the reads with its
dispatch state; they are not part of its recovery snapshot (a resumed flow
waits for the next read), and the source's resume state is the wrapped source's
own (Kafka offsets).

The demand is shared in memory between the step and the partition, so the
control flow runs in one process (it has one key, so a second process would
only idle); workers of that process may be any number.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from typing_extensions import override

from operators.dispatch import Request, TwinSnapshot
from operators.twin_reader import TwinReader

log = logging.getLogger(__name__)
X = TypeVar("X")
S = TypeVar("S")

#: ``clock``: the fleet's time only (a dispatch waiting for its window); ``members``: resolve the
#: members and read their twin (a window that has started); ``twin``: the twin of known members.
WantKind = Literal["clock", "members", "twin"]


@dataclass(frozen=True)
class Want:
    """What one dispatch needs read next."""

    kind: WantKind
    request: Request
    members: tuple[str, ...] = ()


@dataclass(frozen=True)
class TwinRead:
    """The answer to a :class:`Want`: what the twin said about one dispatch's sites when it was read."""

    dispatch_id: str
    kind: WantKind
    fleet_ms: int = 0
    members: list[str] | None = None
    twin: TwinSnapshot | None = None


def serve(reader: TwinReader, want: Want) -> TwinRead:
    """Read what ``want`` asks for (blocking: call it off the worker thread, or in tests)."""
    request = want.request
    if want.kind == "clock":
        return TwinRead(request.dispatch_id, "clock", fleet_ms=reader.fleet_time(request))
    if want.kind == "members":
        members = (list(request.site_ids) if request.site_ids is not None
                   else reader.members(request.node_id or ""))
        twin = reader.snapshot(members)
        return TwinRead(request.dispatch_id, "members", twin.newest_event_ms, members, twin)
    twin = reader.snapshot(list(want.members))
    return TwinRead(request.dispatch_id, "twin", twin.newest_event_ms, twin=twin)


class TwinDemand:
    """What the control step wants read, per dispatch; safe to share between threads of one process."""

    def __init__(self) -> None:
        self._wants: dict[str, Want] = {}
        self._lock = threading.Lock()
        self.changed = threading.Event()

    def want(self, dispatch_id: str, want: Want | None) -> None:
        """Ask for ``want`` for ``dispatch_id`` from now on (None: nothing more)."""
        with self._lock:
            before = self._wants.get(dispatch_id)
            if want is None:
                self._wants.pop(dispatch_id, None)
            else:
                self._wants[dispatch_id] = want
        if want is not None and want != before:
            self.changed.set()

    def keep_only(self, dispatch_ids: set[str]) -> None:
        """Forget the wants of dispatches that are gone."""
        with self._lock:
            for ident in set(self._wants) - dispatch_ids:
                del self._wants[ident]

    def wants(self) -> list[Want]:
        with self._lock:
            return list(self._wants.values())


class _Poller:
    """The thread that answers the demand: at once when it changes, else every ``period_s``."""

    def __init__(self, demand: TwinDemand, make_reader: Callable[[], TwinReader], period_s: float) -> None:
        self.demand = demand
        self.period_s = period_s
        self.reads: deque[TwinRead] = deque()
        self._make_reader = make_reader
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="control-twin-reads", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        reader = self._make_reader()
        while not self._stop.is_set():
            self.demand.changed.wait(self.period_s)
            self.demand.changed.clear()
            for want in self.demand.wants():
                if self._stop.is_set():
                    return
                try:
                    self.reads.append(serve(reader, want))
                except Exception as exc:  # Redis away: the step keeps its last read; try again next period
                    # Expected while Redis is away: one line, not a traceback every period.
                    log.warning("reading the twin for dispatch %s failed (%s: %s); retrying",
                                want.request.dispatch_id, type(exc).__name__, exc)

    def drain(self) -> list[TwinRead]:
        out = []
        while self.reads:
            out.append(self.reads.popleft())
        return out

    def stop(self) -> None:
        self._stop.set()
        self.demand.changed.set()
        self._thread.join(timeout=10)


class _WithTwinsPartition(StatefulSourcePartition[X | TwinRead, S]):
    def __init__(self, inner: StatefulSourcePartition[X, S], poller: _Poller | None) -> None:
        self._inner = inner
        self._poller = poller

    @override
    def next_batch(self) -> list[X | TwinRead]:
        try:
            batch: list[X | TwinRead] = list(self._inner.next_batch())
        except StopIteration:
            if self._poller is not None:
                self._poller.stop()
                self._poller = None
            raise
        if self._poller is not None:
            batch += self._poller.drain()
        return batch

    @override
    def next_awake(self) -> datetime | None:
        if self._poller is not None and self._poller.reads:
            return None  # reads are waiting: come back at once
        return self._inner.next_awake()

    @override
    def snapshot(self) -> S:
        return self._inner.snapshot()

    @override
    def close(self) -> None:
        if self._poller is not None:
            self._poller.stop()
            self._poller = None
        self._inner.close()


class WithTwins(FixedPartitionedSource[X | TwinRead, S], Generic[X, S]):
    """``inner``'s items, and (from its first partition) the twin reads the ``demand`` asks for.

    The reads end with that partition, so a bounded input (a test's) still ends the flow.
    """

    def __init__(self, inner: FixedPartitionedSource[X, S], demand: TwinDemand,
                 make_reader: Callable[[], TwinReader], period_s: float) -> None:
        self.inner = inner
        self.demand = demand
        self.make_reader = make_reader
        self.period_s = period_s
        self._first: str | None = None

    @override
    def list_parts(self) -> list[str]:
        parts = self.inner.list_parts()
        self._first = min(parts)
        return parts

    @override
    def build_part(self, step_id: str, for_part: str, resume_state: S | None) -> _WithTwinsPartition[X, S]:
        first = self._first if self._first is not None else min(self.inner.list_parts())
        poller = _Poller(self.demand, self.make_reader, self.period_s) if for_part == first else None
        part: Any = self.inner.build_part(step_id, for_part, resume_state)
        return _WithTwinsPartition(part, poller)
