"""Idempotent sinks of the dataflows: the live twin in Redis, history in ClickHouse.

Both may see the same result twice (Bytewax replays the epoch it was in after a
crash), so neither may count twice:

* Redis hashes carry a version and a Lua script writes only a version at least
  as new as the stored one, many hashes per script call and one round trip per
  batch (pipelined EVALSHA). A
  replayed older state never overwrites a newer one; the same state rewrites
  itself.
* ClickHouse tables are ReplacingMergeTrees keyed by id and minute, so a row
  written again replaces itself. Rows are buffered and flushed at least at every
  epoch boundary (the partition's ``snapshot``), before Bytewax records the
  epoch as done, so a crash can lose no row that the recovery store thinks
  was written.

Losing Redis does not end the flow: a Redis sink that cannot reach it holds the
batch and tries it again with a bounded, doubling backoff, logging once when the
outage starts and once when it ends (not per batch), and carries on when Redis
answers. The guarded scripts make a repeated batch harmless, and the flow (its
input included) waits meanwhile, so nothing is lost. Both sinks report to the
process's readiness (:data:`operators.readiness.FLOW_HEALTH`): Redis failing,
and every write timed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import redis
from bytewax.outputs import DynamicSink, FixedPartitionedSink, StatefulSinkPartition, StatelessSinkPartition
from typing_extensions import override

from core import keys
from core.config import Settings
from core.history import HistoryStore, connect
from core.rows import CommandLogEntry, DispatchLogEntry, NodePlanRow, NodeWindow, SitePlanRow, SiteWindow
from operators.readiness import FLOW_HEALTH

#: For each ``i``: write the fields packed in ``ARGV[i]`` into hash ``KEYS[i]`` only if the write's
#: version is at least the stored (``_va``, ``_vb``). ``ARGV[i]`` is the version's two parts, the
#: ceiling and the fields, all separated by ``\x1f`` (fields: name and value alternating). Packing
#: matters: redis-py encodes every argument and every command in Python, which cost more than
#: everything else in the dataflow together with one argument per value, and still 12-15% of the
#: flow with one script call per hash. A stored ``_va`` beyond the ceiling (when not negative) was
#: written from a device clock that ran ahead (by code that trusted it): it orders nothing and is
#: overwritten. The writes run in order, so a key written twice in one call ends as if written by
#: two calls. Returns how many were written.
_GUARDED_HSETS = r"""
local written = 0
for i = 1, #KEYS do
  local record = ARGV[i]
  local first = string.find(record, '\31', 1, true)
  local second = string.find(record, '\31', first + 1, true)
  local third = string.find(record, '\31', second + 1, true)
  local va, vb = string.sub(record, 1, first - 1), string.sub(record, first + 1, second - 1)
  local a, b = tonumber(va), tonumber(vb)
  local ceiling = tonumber(string.sub(record, second + 1, third - 1))
  local stored = redis.call('HMGET', KEYS[i], '_va', '_vb')
  local sa, sb = tonumber(stored[1] or '-1'), tonumber(stored[2] or '-1')
  if ceiling >= 0 and sa > ceiling then
    sa, sb = -1, -1
  end
  if not (a < sa or (a == sa and b < sb)) then
    local args = {'_va', va, '_vb', vb}
    for part in string.gmatch(string.sub(record, third + 1), '([^\31]*)\31?') do
      args[#args + 1] = part
    end
    if #args % 2 == 1 then
      args[#args] = nil
    end
    redis.call('HSET', KEYS[i], unpack(args))
    written = written + 1
  end
end
return written
"""
#: Twin writes per script call. A script holds Redis while it runs (every other client, the API's
#: live reads among them, waits), so a call stays short: 100 guarded writes take well under a
#: millisecond, and a batch of thousands is still one round trip (the calls are pipelined).
WRITES_PER_CALL = 100
FIELD_SEPARATOR = "\x1f"
log = logging.getLogger(__name__)

#: The first wait before a batch is tried again while Redis cannot be reached; doubled up to the cap.
RETRY_FIRST_S = 0.1
RETRY_CAP_S = 5.0
#: A Redis that does not answer within this (paused, overloaded) counts as unreachable for the attempt.
REDIS_TIMEOUT_S = 10.0
#: Failures that end when Redis comes back (a restart, a pause, a full connection pool, a reload).
_TRANSIENT = (redis.ConnectionError, redis.TimeoutError)
Item = TypeVar("Item")


@dataclass(frozen=True, slots=True)
class TwinWrite:
    """One versioned hash write: ``key`` becomes ``fields`` unless Redis holds a newer version."""

    key: str
    version: tuple[int, int]
    fields: dict[str, Any]
    #: The highest first version component a plausible write can have now; a stored version beyond
    #: it is overwritten. None: no ceiling.
    ceiling: int | None = None


def pack(fields: dict[str, Any]) -> str:
    """Hash fields as one script argument: name and value alternating, separated by ``\\x1f``."""
    sep = FIELD_SEPARATOR
    return sep.join([f"{name}{sep}{value}" for name, value in fields.items()])  # a list joins faster


def twin_calls(items: list[TwinWrite]) -> Iterator[tuple[list[str], list[Any]]]:
    """The script calls that make ``items``, in order: up to :data:`WRITES_PER_CALL` writes each."""
    sep = FIELD_SEPARATOR
    for start in range(0, len(items), WRITES_PER_CALL):
        chunk = items[start:start + WRITES_PER_CALL]
        yield ([item.key for item in chunk],
               [f"{item.version[0]}{sep}{item.version[1]}{sep}{-1 if item.ceiling is None else item.ceiling}"
                f"{sep}{pack(item.fields)}" for item in chunk])


#: Store a dispatch's status in hash ``KEYS[1]`` (fields packed in ``ARGV[4]`` like above) unless the
#: stored status is final (COMPLETED, PARTIAL, CANCELLED, FAILED) or newer (``event_time`` ``ARGV[1]``);
#: list the dispatch in the sorted set ``KEYS[2]`` by the start of its window (``ARGV[3]``) with id
#: ``ARGV[2]``.
_GUARDED_STATUS = r"""
local stored = redis.call('HMGET', KEYS[1], 'event_time', 'state')
if stored[2] == 'COMPLETED' or stored[2] == 'PARTIAL' or stored[2] == 'CANCELLED'
   or stored[2] == 'FAILED' then
  return 0
end
if stored[1] and tonumber(stored[1]) > tonumber(ARGV[1]) then
  return 0
end
local args = {}
for part in string.gmatch(ARGV[4], '([^\31]*)\31?') do
  args[#args + 1] = part
end
if #args % 2 == 1 then
  args[#args] = nil
end
redis.call('HSET', KEYS[1], unpack(args))
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
return 1
"""


@dataclass(frozen=True, slots=True)
class StatusWrite:
    """The newest status of one dispatch, for ``dispatch:{id}`` and the ``dispatches`` index."""

    dispatch_id: str
    event_ms: int
    state: str
    start_ms: int
    fields: dict[str, Any]


def status_calls(items: list[StatusWrite]) -> Iterator[tuple[list[str], list[Any]]]:
    """One script call per status (a handful per batch)."""
    for item in items:
        yield ([keys.dispatch_status(item.dispatch_id), keys.DISPATCH_INDEX],
               [item.event_ms, item.dispatch_id, item.start_ms, pack(item.fields)])


#: The script calls (keys, arguments) that write a batch, in order.
ScriptCalls = Callable[[list[Item]], Iterable[tuple[list[str], list[Any]]]]


class _ScriptPartition(StatelessSinkPartition[Item]):
    """Runs a guarded Lua script over a batch, all its calls in one pipelined round trip."""

    def __init__(self, client: redis.Redis, script: str, calls: ScriptCalls[Item]) -> None:
        self._client = client
        self._script = client.register_script(script)
        self._calls = calls
        self._outage_since: float | None = None

    @override
    def write_batch(self, items: list[Item]) -> None:
        """Write the batch; while Redis cannot be reached, wait and try the whole batch again."""
        delay = RETRY_FIRST_S
        while True:
            pipe = self._client.pipeline(transaction=False)
            for names, args in self._calls(items):
                self._script(keys=names, args=args, client=pipe)
            try:
                with FLOW_HEALTH.writing("redis"):
                    pipe.execute()
            except _TRANSIENT as exc:
                FLOW_HEALTH.dependency_failing("redis", str(exc) or type(exc).__name__)
                if self._outage_since is None:
                    self._outage_since = time.monotonic()
                    log.warning("Redis cannot be reached (%s): holding the flow's writes and retrying "
                                "(backoff up to %.0f s) until it answers", exc, RETRY_CAP_S)
                time.sleep(delay)
                delay = min(2 * delay, RETRY_CAP_S)
                continue
            FLOW_HEALTH.dependency_ok("redis")
            if self._outage_since is not None:
                log.warning("Redis answers again after %.1f s: carrying on",
                            time.monotonic() - self._outage_since)
                self._outage_since = None
            return

    @override
    def close(self) -> None:
        self._client.close()


class _ScriptSink(DynamicSink[Item]):
    def __init__(self, redis_url: str, script: str, calls: ScriptCalls[Item]) -> None:
        self._url = redis_url
        self._script = script
        self._calls = calls

    @override
    def build(self, step_id: str, worker_index: int, worker_count: int) -> _ScriptPartition[Item]:
        client = redis.Redis.from_url(self._url, socket_timeout=REDIS_TIMEOUT_S,
                                      socket_connect_timeout=REDIS_TIMEOUT_S)
        return _ScriptPartition(client, self._script, self._calls)


class RedisTwinSink(_ScriptSink[TwinWrite]):
    """Versioned writes of ``site:{id}`` and ``node:{id}`` hashes, one pipeline per batch."""

    def __init__(self, redis_url: str) -> None:
        super().__init__(redis_url, _GUARDED_HSETS, twin_calls)


class DispatchStatusSink(_ScriptSink[StatusWrite]):
    """Dispatch statuses into Redis: a final or newer stored status is never overwritten by a replay."""

    def __init__(self, redis_url: str) -> None:
        super().__init__(redis_url, _GUARDED_STATUS, status_calls)


HistoryRow = SiteWindow | NodeWindow | DispatchLogEntry | CommandLogEntry | SitePlanRow | NodePlanRow

#: Which insert of :class:`HistoryStore` takes each kind of row.
_INSERTS: dict[type, Callable[[HistoryStore, list[Any]], None]] = {
    SiteWindow: HistoryStore.insert_site_minutes,
    NodeWindow: HistoryStore.insert_node_minutes,
    DispatchLogEntry: HistoryStore.insert_dispatch_log,
    CommandLogEntry: HistoryStore.insert_command_log,
    SitePlanRow: HistoryStore.insert_site_plans,
    NodePlanRow: HistoryStore.insert_node_plans,
}


class _HistoryPartition(StatefulSinkPartition[HistoryRow, None]):
    """Buffers rows and inserts them on a thread of its own, so a slow insert never stalls the flow.

    ``snapshot`` (the end of an epoch) waits until every row handed over so far is written; an
    insert that failed fails the dataflow there, before Bytewax counts the epoch as done.
    """

    def __init__(self, store: HistoryStore, flush_rows: int) -> None:
        self._store = store
        self._flush_rows = flush_rows
        self._rows: dict[type, list[Any]] = {}
        self._buffered = 0
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="history-sink")
        self._pending: list[Future[None]] = []

    @override
    def write_batch(self, values: list[HistoryRow]) -> None:
        for row in values:
            self._rows.setdefault(type(row), []).append(row)
        self._buffered += len(values)
        if self._buffered >= self._flush_rows:
            self._hand_over()

    def _hand_over(self) -> None:
        if self._buffered:
            self._pending.append(self._writer.submit(self._insert, self._rows))
            self._rows, self._buffered = {}, 0

    def _insert(self, rows: dict[type, list[Any]]) -> None:
        with FLOW_HEALTH.writing("clickhouse"):
            for kind, batch in rows.items():
                _INSERTS[kind](self._store, batch)

    def _wait(self) -> None:
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()

    @override
    def snapshot(self) -> None:
        self._hand_over()
        self._wait()

    @override
    def close(self) -> None:
        self._hand_over()
        self._wait()
        self._writer.shutdown()


class HistorySink(FixedPartitionedSink[HistoryRow, None]):
    """History rows into ClickHouse: minute windows (and their hour and day rollups), control logs."""

    def __init__(self, settings: Settings, partitions: int = 2, flush_rows: int = 20_000,
                 store_factory: Callable[[Settings], HistoryStore] | None = None) -> None:
        self._settings = settings
        self._partitions = partitions
        self._flush_rows = flush_rows
        self._store_factory = store_factory or _store

    @override
    def list_parts(self) -> list[str]:
        return [f"history-{i}" for i in range(self._partitions)]

    @override
    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _HistoryPartition:
        return _HistoryPartition(self._store_factory(self._settings), self._flush_rows)


def _store(settings: Settings) -> HistoryStore:
    return HistoryStore(connect(settings), settings.clickhouse_database)
