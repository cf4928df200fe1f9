"""The Bytewax faces of :class:`operators.shard.Shard` and :class:`operators.rollup.NodeGroup`.

The step functions at the end (:func:`decode`, :func:`sites`, :func:`nodes`)
are what the telemetry dataflow wires: each takes its step id and typed
streams and returns a frozen dataclass of typed streams, one per destination.

Each wraps the plain-Python state in a ``StatefulBatchLogic``: batches in,
periodic ticks from ``notify_at`` (the emission interval), and snapshots as
pickled bytes. Pickling at snapshot time matters: Bytewax may serialise a
snapshot after the logic has already moved on to the next epoch, so handing it
the live object could record a later state than the epoch it belongs to.

A restored snapshot is repaired before use (:meth:`Shard.restored`,
:meth:`NodeGroup.restored`): clocks and twins beyond the wall clock plus the
allowed skew are brought back, and state from before exact rollups is rebuilt
from the sites' contributions. A snapshot from newer code fails loudly.
"""

from __future__ import annotations

import pickle
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import bytewax.operators as op
from bytewax.connectors.kafka import KafkaSinkMessage
from bytewax.dataflow import Stream
from bytewax.operators import KeyedStream, StatefulBatchLogic
from typing_extensions import override

from core import keys
from core.config import Settings
from core.rows import NodeWindow, SiteWindow
from core.topics import TELEMETRY_RAW
from operators.flow_metrics import LATE_READINGS, shard_lag
from operators.kafka_batches import Polled
from operators.records import (
    KafkaOut,
    ShardBatch,
    aggregate_message,
    implausible_letter,
    route,
    status_message,
)
from operators.rollup import GroupOutput, NodeGroup
from operators.shard import NodeChanges, Shard, ShardConfig, ShardOutput
from operators.sinks import TwinWrite
from operators.streams import keyed_values_of, values_of
from schemas.times import epoch_ms, wall_ms


def shard_config(settings: Settings) -> ShardConfig:
    return ShardConfig(
        delayed_after_ms=int(settings.delayed_after_s * 1000),
        offline_after_ms=int(settings.offline_after_s * 1000),
        lateness_ms=int(settings.allowed_lateness_s * 1000),
        expected_samples_per_minute=60.0 / settings.telemetry_interval_s,
        node_groups=settings.telemetry_node_groups,
        idle_ms=int(settings.partition_idle_s * 1000),
        stall_ms=int(settings.shard_stall_s * 1000),
        partitions=tuple(f"{TELEMETRY_RAW}/{p}" for p in range(settings.partitions_of(TELEMETRY_RAW))),
        rules=settings.plausibility(),
        backfill_horizon_ms=int(settings.backfill_horizon_s * 1000),
    )


def shard_snapshot(state: object) -> bytes:
    """A shard's snapshot as the recovery store keeps it: pickled, then zlib level 1 (the columns
    and ancestries compress about four to one for some milliseconds per thousand sites)."""
    return zlib.compress(pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL), 1)


def load_snapshot(resume: bytes) -> Any:
    """A snapshot :func:`shard_snapshot` wrote, or an uncompressed pickle of older code (a pickle of
    protocol 2 or later starts with 0x80, a zlib stream with 0x78)."""
    return pickle.loads(zlib.decompress(resume) if resume[:1] == b"\x78" else resume)


def node_minute_retention_ms(settings: Settings) -> int:
    """How long node groups keep closed node minutes: ten minutes, or the backfill horizon and a margin."""
    return int((settings.allowed_lateness_s + max(600.0, settings.backfill_horizon_s + 120.0)) * 1000)


@dataclass(frozen=True)
class ForGroup:
    """A shard's changes for one node group: the group is the key of the nodes step."""

    key: str
    changes: NodeChanges


#: What the sites step emits: changes for the node groups, twin.status records and dead letters,
#: Redis twin writes, closed site minutes.
ShardResult = ForGroup | KafkaOut | TwinWrite | SiteWindow
#: What the nodes step emits: Redis aggregate writes, aggregates.live records, closed node minutes.
GroupResult = TwinWrite | KafkaOut | NodeWindow


def _shard_results(out: ShardOutput, ceiling_ms: int | None) -> list[ShardResult]:
    """What one call of the shard emits; ``ceiling_ms``: the latest plausible event time now."""
    results: list[ShardResult] = [ForGroup(f"group-{group}", changes)
                                  for group, changes in out.groups.items()]
    results.extend(status_message(site, status, previous, at, seen)
                   for site, status, previous, at, seen in out.statuses)
    # A twin's version is last seen x 4 + status rank (SiteTwin.version).
    ceiling = None if ceiling_ms is None else ceiling_ms * 4 + 3
    results.extend(TwinWrite(keys.site(site), version, fields, ceiling)
                   for site, (version, fields) in out.twins.items())
    results.extend(out.site_rows)
    return results


@dataclass(frozen=True)
class Cadence:
    """How often a shard ticks: live, and while it works through a backlog.

    Live, a shard ticks at a quarter of the node emission interval: a reading waits at most that
    long before its node hears of it, and since a tick refreshes only the sites that changed, more
    ticks cost little more at live rates. While its clock lags the wall clock by more than
    ``catch_up_after_ms`` (after an outage, or replaying a topic) the aggregates it would send are
    already stale, and the rollup cost grows with ticks, so it ticks every ``catch_up_tick`` instead
    and drains the backlog faster;
    it returns to the live cadence as soon as it has caught up.
    """

    live_tick: timedelta
    catch_up_tick: timedelta
    catch_up_after_ms: int
    twin_interval: timedelta

    @classmethod
    def from_settings(cls, settings: Settings) -> Cadence:
        return cls(timedelta(seconds=settings.emit_interval_s / 4),
                   timedelta(seconds=max(settings.catch_up_tick_s, settings.emit_interval_s / 4)),
                   int(settings.catch_up_after_s * 1000), timedelta(seconds=settings.emit_interval_s))


class ShardLogic(StatefulBatchLogic[ShardBatch, ShardResult, bytes]):
    """One shard of sites inside the dataflow."""

    def __init__(self, shard: Shard, cadence: Cadence) -> None:
        self.shard = shard
        self.cadence = cadence
        self.last_tick = datetime.now(UTC)
        self.last_twin_flush = self.last_tick

    @classmethod
    def builder(cls, settings: Settings) -> Any:
        config = shard_config(settings)
        cadence = Cadence.from_settings(settings)

        def build(resume: bytes | None) -> ShardLogic:
            state = load_snapshot(resume) if resume is not None else None
            if state is None:
                shard = Shard(-1, config)
            elif isinstance(state, Shard):  # versions 1 and 2: the shard pickled whole, with its config
                shard = state
                shard.restored(config, wall_ms())
            else:
                shard = Shard.from_state(state, config, wall_ms())
            return cls(shard, cadence)

        return build

    def catching_up(self) -> bool:
        clock = self.shard.clock.now_ms
        return clock > 0 and wall_ms() - clock > self.cadence.catch_up_after_ms

    @override
    def on_batch(self, values: list[ShardBatch]) -> tuple[list[ShardResult], bool]:
        self.shard.shard = values[0].shard
        emitted: list[ShardResult] = []
        now = wall_ms()
        ceiling = self.shard.clock.ceiling(now)
        for batch in values:
            out = self.shard.apply(batch.readings, batch.ancestries, now, batch.source, batch.source_max_ms)
            emitted += _shard_results(out, ceiling)
            emitted.extend(implausible_letter(batch.origin(index), verdict)
                           for index, verdict in out.rejected)
            if out.late_readings:
                LATE_READINGS.inc(out.late_readings)
        shard_lag(self.shard.shard, self.shard.clock.now_ms, now)
        return emitted, self.RETAIN

    @override
    def notify_at(self) -> datetime:
        cadence = self.cadence
        return self.last_tick + (cadence.catch_up_tick if self.catching_up() else cadence.live_tick)

    @override
    def on_notify(self) -> tuple[list[ShardResult], bool]:
        self.last_tick = datetime.now(UTC)
        # Ticks come a little later than planned; aim for one flush per interval, not one per five ticks.
        due = self.last_tick - self.last_twin_flush >= self.cadence.twin_interval * 0.9
        flush = due or self.catching_up()
        if flush:
            self.last_twin_flush = self.last_tick
        now = wall_ms()
        shard_lag(self.shard.shard, self.shard.clock.now_ms, now)
        return _shard_results(self.shard.tick(now, flush), self.shard.clock.ceiling(now)), self.RETAIN

    @override
    def on_eof(self) -> tuple[list[ShardResult], bool]:
        now = wall_ms()
        return _shard_results(self.shard.tick(now), self.shard.clock.ceiling(now)), self.RETAIN

    @override
    def snapshot(self) -> bytes:
        return shard_snapshot(self.shard.state())


def _group_results(out: GroupOutput, max_ahead_ms: int) -> list[GroupResult]:
    emitted: list[GroupResult] = []
    now = wall_ms()
    for record in out.aggregates:
        node_id = record["node_id"]
        event_ms = epoch_ms(record["event_time"])
        fields = {k: (event_ms if k == "event_time" else val) for k, val in record.items()}
        fields["updated_at"] = now
        write = TwinWrite(keys.node(node_id), (event_ms, 0), fields, now + max_ahead_ms)
        emitted.append(write)
        emitted.append(aggregate_message(record))
    emitted.extend(out.node_rows)
    return emitted


class NodeGroupLogic(StatefulBatchLogic[NodeChanges, GroupResult, bytes]):
    """One group of nodes inside the dataflow; emits at most once per interval."""

    def __init__(self, group: NodeGroup, interval_s: float, max_ahead_ms: int) -> None:
        self.group = group
        self.interval = timedelta(seconds=interval_s)
        self.max_ahead_ms = max_ahead_ms
        self.last_emit = datetime.now(UTC) - self.interval

    @classmethod
    def builder(cls, settings: Settings) -> Any:
        retention_ms = node_minute_retention_ms(settings)
        max_ahead_ms = settings.plausibility().max_ahead_ms

        def build(resume: bytes | None) -> NodeGroupLogic:
            if resume is None:
                group = NodeGroup(retention_ms)
            else:
                state = pickle.loads(resume)
                if isinstance(state, NodeGroup):  # versions 1 and 2: the group pickled whole
                    state = NodeGroup.migrate(state)
                group = NodeGroup.from_state(state, retention_ms)
                group.restored(wall_ms(), max_ahead_ms)
            return cls(group, settings.emit_interval_s, max_ahead_ms)

        return build

    @override
    def on_batch(self, values: list[NodeChanges]) -> tuple[list[GroupResult], bool]:
        for changes in values:
            self.group.apply(changes)
        return [], self.RETAIN

    @override
    def notify_at(self) -> datetime | None:
        return self.last_emit + self.interval if self.group.pending else None

    @override
    def on_notify(self) -> tuple[list[GroupResult], bool]:
        self.last_emit = datetime.now(UTC)
        return _group_results(self.group.emit(wall_ms()), self.max_ahead_ms), self.RETAIN

    @override
    def on_eof(self) -> tuple[list[GroupResult], bool]:
        return _group_results(self.group.emit(wall_ms()), self.max_ahead_ms), self.RETAIN

    @override
    def snapshot(self) -> bytes:
        return pickle.dumps(self.group.state(), protocol=pickle.HIGHEST_PROTOCOL)


# ---- the steps, as the telemetry dataflow wires them ------------------------------------------


@dataclass(frozen=True)
class DecodeOut:
    """Decoded input grouped by shard, and the records that could not be used."""

    batches: KeyedStream[ShardBatch]
    dead_letters: Stream[KafkaOut]


def decode(step_id: str, polls: Stream[Polled], settings: Settings) -> DecodeOut:
    """Decode and check polled records (:func:`operators.records.route`) into per-shard batches."""
    routed = op.flat_map_batch(step_id, polls, partial(route, shards=settings.telemetry_shards,
                                                       rules=settings.plausibility()))
    return DecodeOut(keyed_values_of(f"{step_id}-batches", routed, ShardBatch),
                     values_of(f"{step_id}-dead-letters", routed, KafkaSinkMessage))


@dataclass(frozen=True)
class SitesOut:
    """What the sites step hands on, by destination."""

    #: Summed contribution changes, keyed by node group (the nodes step's key).
    node_changes: KeyedStream[NodeChanges]
    #: twin.status transitions and readings refused as implausible (telemetry.dlq).
    kafka: Stream[KafkaOut]
    #: Redis ``site:{id}`` writes.
    twins: Stream[TwinWrite]
    #: Closed site minutes for ClickHouse, keyed by site.
    minutes: KeyedStream[SiteWindow]


def sites(step_id: str, batches: KeyedStream[ShardBatch], settings: Settings) -> SitesOut:
    """One :class:`Shard` per key: twins, status transitions, node changes and site minutes."""
    results = op.stateful_batch(step_id, batches, ShardLogic.builder(settings))
    for_groups = values_of(f"{step_id}-for-groups", results, ForGroup)
    return SitesOut(
        node_changes=op.map(f"{step_id}-node-changes", for_groups, lambda item: (item.key, item.changes)),
        kafka=values_of(f"{step_id}-kafka", results, KafkaSinkMessage),
        twins=values_of(f"{step_id}-twins", results, TwinWrite),
        minutes=op.key_on(f"{step_id}-minutes", values_of(f"{step_id}-rows", results, SiteWindow),
                          lambda row: row.site_id),
    )


@dataclass(frozen=True)
class NodesOut:
    """What the nodes step hands on, by destination."""

    #: aggregates.live records.
    kafka: Stream[KafkaOut]
    #: Redis ``node:{id}`` writes.
    aggregates: Stream[TwinWrite]
    #: Closed node minutes for ClickHouse, keyed by node.
    minutes: KeyedStream[NodeWindow]


def nodes(step_id: str, changes: KeyedStream[NodeChanges], settings: Settings) -> NodesOut:
    """One :class:`NodeGroup` per key: live aggregates at most once per interval, node minutes."""
    results = op.stateful_batch(step_id, changes, NodeGroupLogic.builder(settings))
    return NodesOut(
        kafka=values_of(f"{step_id}-kafka", results, KafkaSinkMessage),
        aggregates=values_of(f"{step_id}-aggregates", results, TwinWrite),
        minutes=op.key_on(f"{step_id}-minutes", values_of(f"{step_id}-rows", results, NodeWindow),
                          lambda row: row.node_id),
    )
