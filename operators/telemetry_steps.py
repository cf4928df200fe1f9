"""The Bytewax faces of :class:`operators.shard.Shard` and :class:`operators.rollup.NodeGroup`.

Each wraps the plain-Python state in a ``StatefulBatchLogic``: batches in,
periodic ticks from ``notify_at`` (the emission interval), and snapshots as
pickled bytes. Pickling at snapshot time matters: Bytewax may serialise a
snapshot after the logic has already moved on to the next epoch, so handing it
the live object could record a later state than the epoch it belongs to.
"""

from __future__ import annotations

import pickle
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from bytewax.operators import StatefulBatchLogic
from typing_extensions import override

from operators.records import ShardBatch, aggregate_message, status_message
from operators.rollup import GroupOutput, NodeGroup
from operators.shard import NodeChanges, Shard, ShardConfig, ShardOutput
from operators.sinks import TwinWrite, node_key, site_key
from vpp.config import Settings
from vpp.topics import TELEMETRY_RAW


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class Emitted:
    """One result of a stateful step, tagged with where it goes next."""

    kind: str  # "nodes" | "kafka" | "redis" | "history"
    key: str
    value: Any


def shard_config(settings: Settings) -> ShardConfig:
    return ShardConfig(
        delayed_after_ms=int(settings.delayed_after_s * 1000),
        offline_after_ms=int(settings.offline_after_s * 1000),
        lateness_ms=int(settings.allowed_lateness_s * 1000),
        expected_samples_per_minute=60.0 / settings.telemetry_interval_s,
        node_groups=settings.telemetry_node_groups,
        idle_ms=int(settings.partition_idle_s * 1000),
        partitions=tuple(f"{TELEMETRY_RAW}/{p}" for p in range(settings.partitions_of(TELEMETRY_RAW))),
    )


def _shard_emissions(out: ShardOutput) -> list[Emitted]:
    emitted = [Emitted("nodes", f"group-{group}", changes) for group, changes in out.groups.items()]
    emitted.extend(Emitted("kafka", site, status_message(site, status, previous, at, seen))
                   for site, status, previous, at, seen in out.statuses)
    emitted.extend(Emitted("redis", site, TwinWrite(site_key(site), version, fields))
                   for site, (version, fields) in out.twins.items())
    emitted.extend(Emitted("history", row.site_id, row) for row in out.site_rows)
    return emitted


class ShardLogic(StatefulBatchLogic[ShardBatch, Emitted, bytes]):
    """One shard of sites inside the dataflow."""

    def __init__(self, shard: Shard, interval_s: float) -> None:
        self.shard = shard
        # Ticking at half the node emission interval bounds the wait of a reading to 1.5 intervals.
        self.interval = timedelta(seconds=interval_s / 2)
        self.next_tick = datetime.now(UTC) + self.interval
        # Twins go to Redis once per emission interval, every other tick.
        self.flush_twins = False

    @classmethod
    def builder(cls, settings: Settings) -> Any:
        config = shard_config(settings)

        def build(resume: bytes | None) -> ShardLogic:
            shard = pickle.loads(resume) if resume is not None else None
            if shard is None:
                shard = Shard(-1, config)
            shard.config = config
            return cls(shard, settings.emit_interval_s)

        return build

    @override
    def on_batch(self, values: list[ShardBatch]) -> tuple[list[Emitted], bool]:
        self.shard.shard = values[0].shard
        emitted: list[Emitted] = []
        now = wall_ms()
        for batch in values:
            out = self.shard.apply(batch.readings, batch.ancestries, now, batch.source, batch.source_max_ms)
            emitted += _shard_emissions(out)
        return emitted, self.RETAIN

    @override
    def notify_at(self) -> datetime:
        return self.next_tick

    @override
    def on_notify(self) -> tuple[list[Emitted], bool]:
        self.next_tick = datetime.now(UTC) + self.interval
        self.flush_twins = not self.flush_twins
        return _shard_emissions(self.shard.tick(wall_ms(), self.flush_twins)), self.RETAIN

    @override
    def on_eof(self) -> tuple[list[Emitted], bool]:
        return _shard_emissions(self.shard.tick(wall_ms())), self.RETAIN

    @override
    def snapshot(self) -> bytes:
        return pickle.dumps(self.shard, protocol=pickle.HIGHEST_PROTOCOL)


def _group_emissions(out: GroupOutput) -> list[Emitted]:
    emitted: list[Emitted] = []
    for record in out.aggregates:
        node_id = record["node_id"]
        event_ms = int(record["event_time"].timestamp() * 1000)
        fields = {k: (event_ms if k == "event_time" else val) for k, val in record.items()}
        fields["updated_at"] = wall_ms()
        emitted.append(Emitted("redis", node_id, TwinWrite(node_key(node_id), (event_ms, 0), fields)))
        emitted.append(Emitted("kafka", node_id, aggregate_message(record)))
    emitted.extend(Emitted("history", row.node_id, row) for row in out.node_rows)
    return emitted


class NodeGroupLogic(StatefulBatchLogic[NodeChanges, Emitted, bytes]):
    """One group of nodes inside the dataflow; emits at most once per interval."""

    def __init__(self, group: NodeGroup, interval_s: float) -> None:
        self.group = group
        self.interval = timedelta(seconds=interval_s)
        self.last_emit = datetime.now(UTC) - self.interval

    @classmethod
    def builder(cls, settings: Settings) -> Any:
        retention_ms = int((settings.allowed_lateness_s + 600) * 1000)

        def build(resume: bytes | None) -> NodeGroupLogic:
            group = pickle.loads(resume) if resume is not None else NodeGroup(retention_ms)
            return cls(group, settings.emit_interval_s)

        return build

    @override
    def on_batch(self, values: list[NodeChanges]) -> tuple[list[Emitted], bool]:
        for changes in values:
            self.group.apply(changes)
        return [], self.RETAIN

    @override
    def notify_at(self) -> datetime | None:
        return self.last_emit + self.interval if self.group.pending else None

    @override
    def on_notify(self) -> tuple[list[Emitted], bool]:
        self.last_emit = datetime.now(UTC)
        return _group_emissions(self.group.emit(wall_ms())), self.RETAIN

    @override
    def on_eof(self) -> tuple[list[Emitted], bool]:
        return _group_emissions(self.group.emit(wall_ms())), self.RETAIN

    @override
    def snapshot(self) -> bytes:
        return pickle.dumps(self.group, protocol=pickle.HIGHEST_PROTOCOL)
