"""The event-time clock of a shard: a watermark over the input partitions that feed it.

Kafka keeps order within a partition, not across them, and a consumer may read
one partition well ahead of another. Taking the newest event time seen as "now"
would then call the lagging partition's readings late. The clock is instead the
*oldest* of the partitions' newest event times, over the partitions heard from
recently (and, at the start, the partitions expected but not heard from yet);
a partition silent for longer than ``idle_ms`` (wall time) stops holding the
clock back. When every partition is silent, the clock runs on with
wall time from the newest event seen, so a fleet that goes quiet still ages.

Silence is counted only while the shard runs. A gap longer than ``stall_ms``
between two of its turns (``observe`` or ``advance``) is the shard not running
(starved of CPU, blocked in a sink write), not its partitions falling silent:
their readings may be waiting in the backlog, so the gap counts as ``stall_ms``.
Counting the whole gap made a 10 s stall on a loaded machine give up on every
partition and run the clock past the backlog, whose readings then came out late.

No device can move the clock on its word alone: with ``max_ahead_ms`` set, no
event time counts for more than the wall clock plus that skew, so one reading
dated a year ahead can neither hold a partition's newest time there nor carry
the clock with it when the input goes quiet. (The telemetry dataflow dead-letters
such readings before they get here; this bound holds even if one slips through.)

The clock never goes backwards, except once on restore: :meth:`EventClock.clamp`
brings a clock from a snapshot (possibly written by code without the bound) back
within the bound. Wall times are not kept in snapshots: after a restart every
partition counts as just heard from.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class EventClock:
    """Watermark over input partitions, in epoch milliseconds."""

    def __init__(self, idle_ms: int, expected: Iterable[str] = (), max_ahead_ms: int | None = None,
                 stall_ms: int | None = None) -> None:
        self.idle_ms = idle_ms
        #: How far the clock may run ahead of the wall clock (the allowed device clock skew); None: no
        #: bound (replays of recorded input in tests, where the wall clock means nothing).
        self.max_ahead_ms = max_ahead_ms
        #: The longest gap between two turns that counts in full as silence; None: every gap does.
        self.stall_ms = stall_ms
        # Partitions expected but not heard from yet hold the clock at the start (for up to idle_ms),
        # so a shard that hears one process's partitions first does not run ahead of the others.
        self.partition_max: dict[str, int] = dict.fromkeys(expected, 0)
        self.now_ms = 0
        self._reset_silence()

    def _reset_silence(self) -> None:
        """Forget the wall-time bookkeeping: every partition counts as just heard from."""
        self._silent_ms: dict[str, int] = {}  # per partition: silent this long while the shard ran
        # No input at all for this long while the shard ran (None: no input since the start).
        self._quiet_ms: int | None = None
        self._last_wall: int | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        for name in ("_silent_ms", "_quiet_ms", "_last_wall"):
            state.pop(name, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Clocks pickled before silence was counted per turn carry _heard_at / _last_input_wall.
        self.__dict__.update({k: v for k, v in state.items() if k not in ("_heard_at", "_last_input_wall")})
        self.__dict__.setdefault("stall_ms", None)
        self._reset_silence()

    def _run_to(self, wall_ms: int) -> None:
        """Count the wall time since the last turn (at most ``stall_ms``) as silence of every input."""
        if self._last_wall is not None and wall_ms > self._last_wall:
            gap = wall_ms - self._last_wall
            if self.stall_ms is not None:
                gap = min(gap, self.stall_ms)
            for partition in self._silent_ms:
                self._silent_ms[partition] += gap
            if self._quiet_ms is not None:
                self._quiet_ms += gap
        if self._last_wall is None or wall_ms > self._last_wall:
            self._last_wall = wall_ms

    @property
    def newest_ms(self) -> int:
        return max(self.partition_max.values(), default=0)

    def ceiling(self, wall_ms: int) -> int | None:
        """The latest time the clock may show at wall time ``wall_ms`` (None: unbounded)."""
        return None if self.max_ahead_ms is None else wall_ms + self.max_ahead_ms

    def clamp(self, wall_ms: int) -> bool:
        """Bring a restored clock back within the bound at ``wall_ms``; True if it was beyond it.

        A time beyond the bound says nothing true, so it becomes the best estimate there is, the
        wall clock; a time within the bound is kept.
        """
        ceiling = self.ceiling(wall_ms)
        if ceiling is None:
            return False
        poisoned = self.now_ms > ceiling or any(m > ceiling for m in self.partition_max.values())
        if self.now_ms > ceiling:
            self.now_ms = wall_ms
        self.partition_max = {p: wall_ms if m > ceiling else m for p, m in self.partition_max.items()}
        return poisoned

    def observe(self, partition: str, event_ms: int, wall_ms: int) -> None:
        """Partition ``partition`` delivered data up to ``event_ms`` (counted up to the ceiling)."""
        ceiling = self.ceiling(wall_ms)
        if ceiling is not None and event_ms > ceiling:
            event_ms = ceiling
        self._run_to(wall_ms)
        if event_ms > self.partition_max.get(partition, 0):
            self.partition_max[partition] = event_ms
        self._silent_ms[partition] = 0
        self._quiet_ms = 0

    def advance(self, wall_ms: int) -> int:
        """The clock at wall time ``wall_ms``."""
        self._run_to(wall_ms)
        if not self.partition_max:
            return self.now_ms
        for partition in self.partition_max:
            self._silent_ms.setdefault(partition, 0)
        active = [m for p, m in self.partition_max.items() if self._silent_ms[p] < self.idle_ms]
        candidate = min(active) if active else self.newest_ms + (self._quiet_ms or 0)
        ceiling = self.ceiling(wall_ms)
        if ceiling is not None:
            candidate = min(candidate, ceiling)
        self.now_ms = max(self.now_ms, candidate)
        return self.now_ms
