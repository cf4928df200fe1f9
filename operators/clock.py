"""The event-time clock of a shard: a watermark over the input partitions that feed it.

Kafka keeps order within a partition, not across them, and a consumer may read
one partition well ahead of another. Taking the newest event time seen as "now"
would then call the lagging partition's readings late. The clock is instead the
*oldest* of the partitions' newest event times, over the partitions heard from
recently (and, at the start, the partitions expected but not heard from yet);
a partition silent for longer than ``idle_ms`` (wall time) stops holding the
clock back. When every partition is silent, the clock runs on with
wall time from the newest event seen, so a fleet that goes quiet still ages.

The clock never goes backwards. Wall times are not kept in snapshots: after a
restart every partition counts as just heard from.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class EventClock:
    """Watermark over input partitions, in epoch milliseconds."""

    def __init__(self, idle_ms: int, expected: Iterable[str] = ()) -> None:
        self.idle_ms = idle_ms
        # Partitions expected but not heard from yet hold the clock at the start (for up to idle_ms),
        # so a shard that hears one process's partitions first does not run ahead of the others.
        self.partition_max: dict[str, int] = dict.fromkeys(expected, 0)
        self.now_ms = 0
        self._heard_at: dict[str, int] = {}
        self._last_input_wall: int | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_heard_at"] = {}
        state["_last_input_wall"] = None
        return state

    @property
    def newest_ms(self) -> int:
        return max(self.partition_max.values(), default=0)

    def observe(self, partition: str, event_ms: int, wall_ms: int) -> None:
        """Partition ``partition`` delivered data up to ``event_ms``."""
        if event_ms > self.partition_max.get(partition, 0):
            self.partition_max[partition] = event_ms
        self._heard_at[partition] = wall_ms
        self._last_input_wall = wall_ms

    def advance(self, wall_ms: int) -> int:
        """The clock at wall time ``wall_ms``."""
        if not self.partition_max:
            return self.now_ms
        for partition in self.partition_max:
            self._heard_at.setdefault(partition, wall_ms)
        active = [m for p, m in self.partition_max.items() if wall_ms - self._heard_at[p] < self.idle_ms]
        if active:
            candidate = min(active)
        else:
            last = self._last_input_wall if self._last_input_wall is not None else wall_ms
            candidate = self.newest_ms + max(0, wall_ms - last)
        self.now_ms = max(self.now_ms, candidate)
        return self.now_ms
