"""Drive the telemetry state (shards and node groups) in-process, without Bytewax or Kafka.

The same plain-Python objects the dataflow keys run here in a loop, so the
reference check can be made quickly and for many random inputs; the
integration tests then check that the real dataflow gives the same answers.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, replace
from typing import Any

from core.plausibility import Rules
from core.rows import NodeWindow, SiteWindow
from operators.rollup import NodeGroup
from operators.shard import Shard, ShardConfig, ShardOutput, bucket_of
from operators.twin import Reading
from schemas.times import from_epoch_ms
from tests.telemetry.scenario import Scenario

#: The dataflow's default (``VPP_BACKFILL_HORIZON_S``, 15 minutes).
BACKFILL_HORIZON_MS = 900_000


@dataclass
class Results:
    nodes: dict[str, dict[str, Any]]
    site_rows: dict[tuple[str, int], SiteWindow]
    node_rows: dict[tuple[str, int], NodeWindow]
    late_readings: int
    #: Readings the shards refused as implausible.
    rejected: int = 0


def config_for(sc: Scenario, node_groups: int) -> ShardConfig:
    """The dataflow's shard settings for ``sc``, with the default plausibility rules."""
    return ShardConfig(sc.delayed_after_ms, sc.offline_after_ms, sc.lateness_ms, 60.0, node_groups,
                       rules=Rules())


def wall_of(sc: Scenario) -> int:
    """The wall clock of a replay of ``sc``: just after its last reading, as if it ran live."""
    return sc.end_ms + 1_000


def run(sc: Scenario, shards: int = 8, node_groups: int = 4, batch: int = 700,
        late_ancestries: Collection[str] = (), late_after_ms: int = 0) -> Results:
    """Feed the scenario through shards and node groups in batches of ``batch`` messages.

    The ancestries of ``late_ancestries`` come once the input has got past ``late_after_ms`` (as when
    one process reads its ``assets.changes`` partition late), with the dataflow's backfill horizon.
    """
    config = config_for(sc, node_groups)
    if late_ancestries:
        config = replace(config, backfill_horizon_ms=BACKFILL_HORIZON_MS)
    shard_of = {i: Shard(i, config) for i in range(shards)}
    groups = {g: NodeGroup(retention_ms=3_600_000) for g in range(node_groups)}
    results = Results({}, {}, {}, 0)
    wall = wall_of(sc)

    def deliver(out: ShardOutput) -> None:
        for group, changes in out.groups.items():
            groups[group].apply(changes)
        for row in out.site_rows:
            results.site_rows[(row.site_id, int(row.start.timestamp() * 1000))] = row
        results.late_readings += out.late_readings
        results.rejected += len(out.rejected)

    def emit() -> None:
        for group in groups.values():
            out = group.emit(wall_ms=0)
            for record in out.aggregates:
                results.nodes[record["node_id"]] = record
            for row in out.node_rows:
                results.node_rows[(row.node_id, int(row.start.timestamp() * 1000))] = row

    def place(ancestries: list[dict[str, Any]]) -> None:
        for shard_id, shard in shard_of.items():
            mine = [a for a in ancestries if bucket_of(a["site_id"], shards) == shard_id]
            deliver(shard.apply([], mine, wall_ms=wall))

    place([a for a in sc.ancestries if a["site_id"] not in late_ancestries])
    late = [a for a in sc.ancestries if a["site_id"] in late_ancestries]
    stream = [*sc.readings, *sc.too_late]
    for start in range(0, len(stream), batch):
        if late and stream[start]["event_time"] >= from_epoch_ms(late_after_ms):
            place(late)
            late = []
        per_shard: dict[int, list[tuple[str, Reading]]] = {}
        for record in stream[start:start + batch]:
            per_shard.setdefault(bucket_of(record["site_id"], shards), []).append(
                (record["site_id"], Reading.from_record(record)))
        # As the dataflow's decode step does: every shard hears how far the input has got.
        newest = max(r.event_ms for readings in per_shard.values() for _, r in readings)
        for shard_id, shard in shard_of.items():
            deliver(shard.apply(per_shard.get(shard_id, []), [], wall_ms=wall, source_max_ms=newest))
        for shard in shard_of.values():
            deliver(shard.tick(wall_ms=wall))
        emit()
    return results
