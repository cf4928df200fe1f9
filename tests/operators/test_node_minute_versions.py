"""A node minute is written as the sum of its shards' shares so far, each write newer than the last."""

from __future__ import annotations

from operators.rollup import NodeGroup
from operators.shard import NodeChanges
from operators.windows import SILENT_PARTIAL

MINUTE = 1_790_000_000_000 - 1_790_000_000_000 % 60_000


def _share(shard: int) -> NodeChanges:
    return NodeChanges(meta={"feeder-0": ("electrical", "feeder")},
                       minutes={("feeder-0", MINUTE): list(SILENT_PARTIAL)}, clock_ms=MINUTE, shard=shard)


def test_two_emissions_in_one_millisecond_write_the_complete_row_with_the_newer_version() -> None:
    group = NodeGroup(retention_ms=3_600_000)
    group.apply(_share(0))
    partial = group.emit(wall_ms=MINUTE + 90_000).node_rows
    group.apply(_share(1))  # the last shard's share arrives within the same millisecond
    complete = group.emit(wall_ms=MINUTE + 90_000).node_rows
    assert [r.expected_sites for r in partial] == [1] and [r.expected_sites for r in complete] == [2]
    # ReplacingMergeTree keeps the highest version: it must be the complete row's, never a tie.
    assert complete[0].version > partial[0].version
