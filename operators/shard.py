"""A shard of sites: the keyed state of the telemetry dataflow, as plain Python.

Keying the dataflow by site would pass every reading through Bytewax on its own
and send one message per ancestor node per reading. Keying by shard (a stable
hash of the site id into ``telemetry_shards`` buckets) lets one call handle a
whole batch of readings, and sends each node group one message per batch with
the summed changes of every node in it. The shard count is fixed for the life of
a recovery store; workers and processes can change.

The sites are columns (:mod:`operators.site_columns`, state version 4): one
array per field over the shard's rows, so a batch and a tick are a few array
operations, not a loop over objects; :attr:`Shard.sites` gives a site as a
:class:`SiteTwin` for tests and tools. Per batch, the shard updates each site's
twin and minute windows. On each
periodic :meth:`Shard.tick` (four per emission interval) it sends the
*difference* between what each changed site contributes now and what it
contributed at the last tick (:mod:`operators.twin`), to the nodes it belongs to
now and, when membership changed, away from the nodes it left; so the cost of
the rollups grows with sites x ticks, not with readings, and a backlog drains
fast. The tick also moves silent sites along ONLINE -> DELAYED -> OFFLINE,
applies membership changes whose time has come, closes minute windows, and
writes changed twins.

The shard's clock is a watermark over the input partitions that feed it
(:mod:`operators.clock`), so a partition read ahead of another does not make the
other's readings late, and a fleet that goes quiet still ages.

With :attr:`ShardConfig.rules` set (always, in the dataflow), the shard refuses
what a device may not say even after the decode step's plausibility check
(defence in depth): a battery power beyond the site's registered rating (only
the shard knows the site's ancestry), and an event time beyond the wall clock
plus the allowed skew. Refused readings touch neither twin, window nor clock;
:attr:`ShardOutput.rejected` says which and why, for the dead-letter topic.

Contributions are integers (fixed-point units, :mod:`operators.twin`), so the
differences sent to the nodes add up exactly.

A snapshot is repaired when restored (:meth:`Shard.restored`): a clock, twin or
window beyond the wall clock plus the allowed skew (left by code that trusted
device time) is brought back, and a snapshot from before exact rollups (state
version 1) re-sends every site's whole contribution to node groups that start
their sums from zero.
"""

from __future__ import annotations

import math
import operator
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from itertools import repeat
from typing import Any

import numpy as np

from core.plausibility import FUTURE_EVENT_TIME, Implausible, Rules, SiteLimits, check_telemetry
from core.rows import SiteWindow
from operators import twin as tw
from operators.ancestry import Ancestry, Chains, node_kind
from operators.backfill import KeptWindow, SiteBackfill
from operators.clock import EventClock
from operators.reading_columns import ReadingColumns
from operators.site_columns import (
    DELAYED,
    F64,
    I64,
    NEVER,
    NONE,
    OFFLINE,
    ONLINE,
    STATUS_CODES,
    STATUS_NAMES,
    UNKNOWN,
    ChainTable,
    MinuteColumns,
    SiteColumns,
    contributions,
)
from operators.twin import Reading, SiteTwin
from operators.windows import MINUTE_MS, SILENT_PARTIAL, MinuteWindow, add_into, minute_of

#: The shape of the snapshot: 1, the Shard pickled whole with float vectors; 2, the same with integer
#: vectors; 3, a :class:`ShardState` (plain data, an object per site, no config); 4, a
#: :class:`ShardColumns` (the sites as columns, :mod:`operators.site_columns`).
STATE_VERSION = 4
#: The first version with exact (integer) vectors.
EXACT_VECTORS = 2


def add_units(total: list[int], part: Sequence[int]) -> None:
    """``total += part``, element-wise, in place, for contribution vectors (exact: integers)."""
    total[:] = map(operator.add, total, part)


#: At most this many minutes without any reading get node-minute shares when a shard closes them.
MAX_SILENT_MINUTES = 60


@lru_cache(maxsize=1 << 16)
def bucket_of(key: str, buckets: int) -> int:
    """A stable bucket for ``key`` (CRC-32, the same in every process and run)."""
    return zlib.crc32(key.encode()) % buckets


@dataclass(frozen=True)
class ShardConfig:
    """The timing and layout settings a shard needs, in milliseconds."""

    delayed_after_ms: int
    offline_after_ms: int
    lateness_ms: int
    expected_samples_per_minute: float
    node_groups: int
    #: An input partition silent this long (wall time) stops holding the clock back.
    idle_ms: int = 10_000
    #: A gap between two turns of the shard longer than this counts only this long as silence
    #: (:mod:`operators.clock`); None: in full.
    stall_ms: int | None = None
    #: The input partitions ("topic/partition") the clock waits for at the start.
    partitions: tuple[str, ...] = ()
    #: What a device may say (:mod:`core.plausibility`): bounds the clock and twins by the wall clock
    #: and battery power by the site's rating. None only for replays of recorded input in tests.
    rules: Rules | None = None
    #: How far back (event time, behind the closed minutes) a late reading still corrects history
    #: (:mod:`operators.backfill`); 0: late readings are only counted.
    backfill_horizon_ms: int = 0

    @property
    def max_ahead_ms(self) -> int | None:
        return None if self.rules is None else self.rules.max_ahead_ms


@dataclass(slots=True)
class NodeChanges:
    """What one shard sends one node group: summed changes per node, since its last message."""

    #: Summed contribution difference per node (an integer vector laid out as in :mod:`operators.twin`).
    deltas: dict[str, list[int]] = field(default_factory=dict)
    #: Stale members (not ONLINE, last seen at the value) to list per node; None removes the entry.
    stale: dict[str, dict[str, int | None]] = field(default_factory=dict)
    #: (hierarchy, kind) of nodes the shard is telling about for the first time in a while.
    meta: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: Closed minutes: summed site-minute shares per (node, minute start).
    minutes: dict[tuple[str, int], list[float]] = field(default_factory=dict)
    #: Backfill: differences to add to this shard's share of minutes it sent before.
    corrections: dict[tuple[str, int], list[float]] = field(default_factory=dict)
    #: The shard's clock when it sent this.
    clock_ms: int = 0
    shard: int = 0


@dataclass(slots=True)
class ShardOutput:
    """Everything one call of the shard emits."""

    groups: dict[int, NodeChanges] = field(default_factory=dict)
    #: Status transitions: (site, new status, previous status, at ms, last seen ms).
    statuses: list[tuple[str, str, str, int, int | None]] = field(default_factory=list)
    #: Twin writes for Redis: site -> (version, fields).
    twins: dict[str, tuple[tuple[int, int], dict[str, Any]]] = field(default_factory=dict)
    site_rows: list[SiteWindow] = field(default_factory=list)
    late_readings: int = 0
    #: Late readings that completed a closed minute (:mod:`operators.backfill`).
    backfilled_readings: int = 0
    #: Readings refused, by position in the batch given to :meth:`Shard.apply`, and why.
    rejected: list[tuple[int, Implausible]] = field(default_factory=list)


def _check_version(version: int) -> None:
    if version > STATE_VERSION:
        raise RuntimeError(f"shard snapshot has state version {version}, this code reads up to "
                           f"{STATE_VERSION}: run the newer code or start from an empty recovery store")


@dataclass(frozen=True)
class ShardState:
    """What a shard snapshots: its sites and clock as plain data; the config is the settings'
    (:meth:`Shard.from_state`). A new field is one line here and one in each of :meth:`Shard.state`
    and :meth:`Shard.from_state`."""

    shard: int
    sites: tuple[tuple[str, SiteTwin], ...]
    clock_ms: int
    partition_max: tuple[tuple[str, int], ...]
    closed_before_ms: int | None
    first_minute_ms: int | None
    changed: tuple[str, ...]
    dirty_twins: tuple[str, ...]
    new_limits: tuple[str, ...]
    version: int = STATE_VERSION
    #: Closed windows kept for backfill, per site (absent from snapshots written before backfill).
    backfill: tuple[tuple[str, SiteBackfill], ...] = ()


@dataclass(frozen=True)
class ShardColumns:
    """What a shard snapshots from version 4 on: its sites as columns (:mod:`operators.site_columns`),
    its chain sets, open minute windows and clock, as plain data; the config is the settings'."""

    shard: int
    site_ids: tuple[str, ...]
    #: Column name -> the first ``len(site_ids)`` rows of that column.
    columns: dict[str, Any]
    #: The chain sets the ``sent_set`` and ``chain_set`` columns number, in order.
    chain_sets: tuple[Chains, ...]
    #: Open minute windows: (minute start, (columns, sequence numbers seen)) (:class:`MinuteColumns`).
    windows: tuple[tuple[int, tuple[dict[str, Any], tuple[tuple[int, int, int], ...]]], ...]
    clock_ms: int
    partition_max: tuple[tuple[str, int], ...]
    closed_before_ms: int | None
    first_minute_ms: int | None
    version: int = STATE_VERSION
    #: Closed windows kept for backfill, per site (absent from snapshots written before backfill:
    #: the class default is what unpickling those gives).
    backfill: tuple[tuple[str, SiteBackfill], ...] = ()
    #: Closed windows of sites in no node yet, per site (absent from older snapshots, as backfill).
    unplaced: tuple[tuple[str, tuple[tuple[int, MinuteWindow], ...]], ...] = ()


class Shard:
    """The sites of one shard (as columns) and the clock they share."""

    def __init__(self, shard: int, config: ShardConfig) -> None:
        self.shard = shard
        self.config = config
        self.state_version = STATE_VERSION
        self.table = SiteColumns()
        self.chains = ChainTable()
        #: Open minute windows by minute start.
        self.windows: dict[int, MinuteColumns] = {}
        self.clock = EventClock(config.idle_ms, config.partitions, config.max_ahead_ms, config.stall_ms)
        #: Minutes starting before this are closed (None: none closed yet).
        self.closed_before_ms: int | None = None
        #: The earliest minute this shard has had a reading for: history starts there.
        self.first_minute_ms: int | None = None
        #: Closed windows late readings may still complete, per site (:mod:`operators.backfill`):
        #: only sites that went quiet or came back after a gap, so a dict beside the columns.
        self.backfill: dict[str, SiteBackfill] = {}
        #: Closed windows of sites in no node yet (no ancestry), counted when it comes (within the horizon).
        self.unplaced: dict[str, dict[int, MinuteWindow]] = {}

    # ---- views ---------------------------------------------------------------------------

    @property
    def sites(self) -> dict[str, SiteTwin]:
        """Every site as a :class:`SiteTwin` (a copy: for tests and tools, not the hot path)."""
        return {site: self._twin_view(row) for site, row in self.table.index.items()}

    def twin(self, site_id: str) -> SiteTwin | None:
        """The site ``site_id`` as a :class:`SiteTwin` (a copy), None if never heard of."""
        row = self.table.index.get(site_id)
        return None if row is None else self._twin_view(row)

    def _twin_view(self, row: int) -> SiteTwin:
        t = self.table
        reading = self._reading(row)
        stale, recheck = int(t.sent_stale[row]), int(t.recheck[row])
        return SiteTwin(
            t.ids[row], reading, STATUS_NAMES[t.status[row]], t.ancestry[row],
            tuple(int(x) for x in t.sent[row]), self.chain_set_of(int(t.sent_set[row])),
            None if stale == NONE else stale, None if recheck == NEVER else recheck,
            {minute: window for minute, columns in self.windows.items()
             if (window := columns.window(row)) is not None})

    def _reading(self, row: int) -> Reading | None:
        t = self.table
        if t.event_ms[row] == NONE:
            return None
        temp = float(t.temp[row])
        return Reading(int(t.event_ms[row]), int(t.seq[row]), float(t.soc[row]), float(t.battery[row]),
                       float(t.solar[row]), float(t.load[row]), float(t.grid[row]),
                       None if math.isnan(temp) else temp, t.mode[row], t.command[row])

    def chain_set_of(self, number: int) -> Chains:
        return () if number < 0 else self.chains.sets[number]

    # ---- input ---------------------------------------------------------------------------

    def apply(self, readings: ReadingColumns | Sequence[tuple[str, Reading]],
              ancestries: Iterable[dict[str, Any]], wall_ms: int, source: str = "",
              source_max_ms: int = 0) -> ShardOutput:
        """Take in a batch of readings (all from input partition ``source``) and ancestry changes.

        ``readings`` come as columns (the decode step's batches) or as ``(site_id, Reading)`` pairs;
        ``source_max_ms`` is the newest event time that poll of ``source`` delivered to any shard.
        """
        out = ShardOutput()
        t = self.table
        for record in ancestries:
            row = t.row(record["site_id"])
            ancestry = t.ancestry[row]
            if ancestry is None:
                ancestry = Ancestry.from_record(record)
            elif not ancestry.merge(record):
                continue
            t.set_ancestry(row, ancestry)
            t.changed[row] = t.new_limits[row] = True
            if record["site_id"] in self.unplaced:
                self._count_in_nodes(row, self.unplaced.pop(record["site_id"]), out)
        rules = self.config.rules
        ceiling = wall_ms + rules.max_ahead_ms if rules is not None else 0
        newest = min(source_max_ms, ceiling) if rules is not None else source_max_ms
        if len(readings):
            batch = (readings if isinstance(readings, ReadingColumns)
                     else ReadingColumns.from_readings(readings))
            newest = max(newest, self._take(batch, wall_ms, ceiling, out))
        if newest:
            self.clock.observe(source, newest, wall_ms)
        now = self.clock.advance(wall_ms)
        # Closing here as well as on ticks makes "too late" a matter of event time only,
        # not of how batches happened to meet the wall clock.
        self._close_minutes(now, out)
        return out

    def _take(self, batch: ReadingColumns, wall_ms: int, ceiling: int, out: ShardOutput) -> int:
        """Check a batch of readings, write the newest of each site into the columns and count every
        one into its minute window; returns the newest event time taken (0: none)."""
        t = self.table
        site_ids = batch.site_ids
        index = t.index
        known = np.fromiter(map(index.get, site_ids, repeat(-1)), dtype=np.int64, count=len(site_ids))
        event = batch.event_ms
        battery = batch.floats["battery"]
        rules = self.config.rules
        taken: I64 | None = None
        if rules is not None:
            margin = rules.rating_margin
            at = np.where(known >= 0, known, 0)
            low, high = -t.max_charge[at] * margin, t.max_discharge[at] * margin
            limited = (known >= 0) & ~np.isnan(high)
            with np.errstate(invalid="ignore"):
                refused = (event > ceiling) | (limited & ~((low <= battery) & (battery <= high)))
            if refused.any():
                for position in np.flatnonzero(refused).tolist():
                    row = int(known[position])
                    out.rejected.append((position, _why(batch.reading(position), wall_ms,
                                                        t.ancestry[row] if row >= 0 else None, rules)))
                taken = np.flatnonzero(~refused)
                if len(taken) == 0:
                    return 0
        if (known < 0).any():  # sites first heard of now get rows (refused readings make none)
            new = np.flatnonzero(known < 0) if taken is None else taken[known[taken] < 0]
            for position in new.tolist():
                known[position] = t.row(site_ids[position])
        rows = known if taken is None else known[taken]
        seq = batch.seq
        floats = batch.floats
        if taken is not None:
            event, seq = event[taken], seq[taken]
            floats = {name: column[taken] for name, column in floats.items()}
        # The newest reading of each site in the batch (event time, then sequence; the first of equals).
        order = np.lexsort((-np.arange(len(rows)), seq, event, rows))
        ordered = rows[order]
        if self.config.backfill_horizon_ms > 0:
            self._note_returns(ordered, event[order], wall_ms)
        last = order[np.r_[ordered[1:] != ordered[:-1], True]]
        winners, at_rows = last, rows[last]
        held_event, held_seq = t.event_ms[at_rows], t.seq[at_rows]
        newer = (event[winners] > held_event) | ((event[winners] == held_event) & (seq[winners] > held_seq))
        winners, at_rows = winners[newer], at_rows[newer]
        if len(winners):
            source = winners if taken is None else taken[winners]
            t.event_ms[at_rows] = event[winners]
            t.seq[at_rows] = seq[winners]
            for name, column in floats.items():
                t.cols[name][at_rows] = column[winners]
            t.mode[at_rows] = batch.mode[source]
            t.command[at_rows] = batch.command[source]
            t.changed[at_rows] = True
        self._count_in_windows(rows, seq, event, floats, out)
        return int(event.max())

    def _count_in_windows(self, rows: I64, seq: I64, event: I64, floats: dict[str, F64],
                          out: ShardOutput) -> None:
        """Count each reading into its site's minute window (a closed minute's are late)."""
        closed_before = self.closed_before_ms if self.closed_before_ms is not None else -1
        minutes = event - event % MINUTE_MS
        late = minutes < closed_before
        if late.any():
            backfilled = 0
            if self.backfill and self.config.backfill_horizon_ms > 0:
                backfilled = self._backfill(np.flatnonzero(late), rows, seq, event, floats, out)
            out.late_readings += int(late.sum()) - backfilled
            out.backfilled_readings += backfilled
        size = self.table.size
        for minute in np.unique(minutes[~late]).tolist():
            columns = self.windows.get(minute)
            if columns is None:
                columns = self.windows[minute] = MinuteColumns(size)
                if self.first_minute_ms is None or minute < self.first_minute_ms:
                    self.first_minute_ms = minute
            else:
                columns.grow(size)
            chosen = minutes == minute
            columns.add(rows[chosen], seq[chosen], event[chosen],
                        {name: column[chosen] for name, column in floats.items()})

    # ---- restore --------------------------------------------------------------------------

    def restored(self, config: ShardConfig, wall_ms: int) -> None:
        """Make a shard just unpickled whole safe to run on at wall time ``wall_ms``.

        A snapshot from a newer state version fails loudly; a shard pickled whole by code before
        version 4 (an object per site) is converted to columns, and one from before exact rollups
        (version 1) re-sends every contribution (its node groups start from zero,
        :meth:`NodeGroup.restored`); a clock, twin or window beyond the wall clock plus the allowed
        skew is brought back within it.
        """
        version = getattr(self, "state_version", 1)
        _check_version(version)
        if "table" not in self.__dict__:  # an object per site: versions 1 and 2
            old = dict(self.__dict__)
            self.__dict__.clear()
            Shard.__init__(self, old["shard"], config)
            self.clock = old["clock"]
            self._load_twins(old["sites"], old["closed_before_ms"], old["first_minute_ms"],
                             old.get("_changed", ()), old.get("_dirty_twins", ()), old.get("_new_limits", ()))
            if version < EXACT_VECTORS:
                t = self.table
                t.sent[:t.n] = 0
                t.sent_set[:t.n] = -1
                t.sent_stale[:t.n] = NONE
                t.changed[:t.n] = True
        if "backfill" not in self.__dict__:  # pickled whole before backfill
            self.backfill = {}
        if "unplaced" not in self.__dict__:
            self.unplaced = {}
        self.config = config
        self.state_version = STATE_VERSION
        self.clock.max_ahead_ms = config.max_ahead_ms
        self.clock.stall_ms = config.stall_ms
        self._repair(wall_ms)

    def state(self) -> ShardColumns:
        """The shard as plain data, for a snapshot (the clock's wall-time bookkeeping is not kept)."""
        return ShardColumns(
            self.shard, tuple(self.table.ids), self.table.state(), tuple(self.chains.sets),
            tuple((minute, columns.state(self.table.n)) for minute, columns in self.windows.items()),
            self.clock.now_ms, tuple(self.clock.partition_max.items()), self.closed_before_ms,
            self.first_minute_ms, backfill=tuple(self.backfill.items()),
            unplaced=tuple((site_id, tuple(windows.items())) for site_id, windows in self.unplaced.items()))

    @classmethod
    def from_state(cls, state: ShardColumns | ShardState, config: ShardConfig, wall_ms: int) -> Shard:
        """The shard ``state`` describes (version 3, an object per site, or 4, columns), run by
        ``config``, safe to run on at wall time ``wall_ms``."""
        _check_version(state.version)
        shard = cls(state.shard, config)
        shard.clock.now_ms, shard.clock.partition_max = state.clock_ms, dict(state.partition_max)
        if isinstance(state, ShardState):
            shard._load_twins(dict(state.sites), state.closed_before_ms, state.first_minute_ms,
                              state.changed, state.dirty_twins, state.new_limits)
        else:
            shard.table = SiteColumns.from_state(state.site_ids, state.columns)
            for chains in state.chain_sets:
                shard.chains.intern(chains)
            shard.windows = {minute: MinuteColumns.from_state(shard.table.size, columns)
                             for minute, columns in state.windows}
            shard.closed_before_ms, shard.first_minute_ms = state.closed_before_ms, state.first_minute_ms
        shard.backfill = dict(state.backfill)
        shard.unplaced = {site_id: dict(windows) for site_id, windows in getattr(state, "unplaced", ())}
        shard._repair(wall_ms)
        return shard

    def _load_twins(self, twins: dict[str, SiteTwin], closed_before_ms: int | None,
                    first_minute_ms: int | None, changed: Iterable[str], dirty: Iterable[str],
                    new_limits: Iterable[str]) -> None:
        """Fill the columns from an object per site (state versions 1 to 3)."""
        t = self.table
        self.closed_before_ms, self.first_minute_ms = closed_before_ms, first_minute_ms
        for site_id, twin in twins.items():
            row = t.row(site_id)
            if twin.ancestry is not None:
                t.set_ancestry(row, twin.ancestry)
            reading = twin.reading
            if reading is not None:
                t.event_ms[row], t.seq[row] = reading.event_ms, reading.seq
                t.soc[row], t.battery[row] = reading.soc_pct, reading.battery_kw
                t.solar[row] = reading.solar_kw
                t.load[row], t.grid[row] = reading.load_kw, reading.grid_kw
                t.temp[row] = np.nan if reading.battery_temp_c is None else reading.battery_temp_c
                t.mode[row], t.command[row] = reading.mode, reading.active_command_id
            t.status[row] = STATUS_CODES[twin.status]
            if all(isinstance(x, int) for x in twin.sent_vector):
                t.sent[row] = twin.sent_vector
            t.sent_set[row] = self.chains.intern(twin.sent_chains)
            t.sent_stale[row] = NONE if twin.sent_stale_ms is None else twin.sent_stale_ms
            t.recheck[row] = NEVER if twin.recheck_ms is None else twin.recheck_ms
        for site_id, twin in twins.items():
            for minute, window in twin.windows.items():
                self.windows.setdefault(minute, MinuteColumns(t.size)).put(t.index[site_id], window)
        for names, column in ((changed, t.changed), (dirty, t.dirty), (new_limits, t.new_limits)):
            for site_id in names:
                column[t.index[site_id]] = True

    def _repair(self, wall_ms: int) -> None:
        """Bring back within the bound what trusted a device's clock: the shard clock, twins, windows."""
        ceiling = self.clock.ceiling(wall_ms)
        if ceiling is None:
            return
        t, n = self.table, self.table.n
        poisoned = self.clock.clamp(wall_ms)
        ahead = t.event_ms[:n] > ceiling
        if ahead.any():
            t.event_ms[:n][ahead] = NONE  # the next current reading takes its place
            poisoned = True
        for minute in [m for m in self.windows if m > ceiling]:
            del self.windows[minute]
            poisoned = True
        if self.closed_before_ms is not None and self.closed_before_ms > ceiling:
            now = self.clock.now_ms
            self.closed_before_ms = (minute_of(now - self.config.lateness_ms - 60_000) + 60_000
                                     if now > 0 else None)
            poisoned = True
        if self.first_minute_ms is not None and self.first_minute_ms > ceiling:
            self.first_minute_ms = min(self.windows, default=None)
        if poisoned:  # every status and contribution is looked at again against the repaired clock
            t.recheck[:n] = NEVER
            t.chain_until[:n] = NONE
            t.changed[:n] = True

    # ---- time ----------------------------------------------------------------------------

    def tick(self, wall_ms: int, flush_twins: bool = True) -> ShardOutput:
        """Send the changed contributions, age silent sites, apply due membership changes, close
        minutes, write changed twins."""
        out = ShardOutput()
        now = self.clock.advance(wall_ms)
        t, n = self.table, self.table.n
        due = np.flatnonzero(t.changed[:n] | (t.recheck[:n] <= now))
        t.changed[:n] = False
        if len(due):
            self._refresh(due, now, out)
        self._close_minutes(now, out)
        if flush_twins:
            self._flush_twins(now, out)
        return out

    def _flush_twins(self, now: int, out: ShardOutput) -> None:
        """The ``site:{id}`` hash of every twin that changed (as :meth:`SiteTwin.redis_fields`, from
        the columns, without a SiteTwin per site)."""
        t, n = self.table, self.table.n
        rows = np.flatnonzero(t.dirty[:n])
        if len(rows) == 0:
            return
        columns = zip(rows.tolist(), t.new_limits[rows].tolist(), t.status[rows].tolist(),
                      t.event_ms[rows].tolist(), t.seq[rows].tolist(), t.soc[rows].tolist(),
                      t.battery[rows].tolist(), t.solar[rows].tolist(), t.load[rows].tolist(),
                      t.grid[rows].tolist(), t.temp[rows].tolist(), strict=True)
        ids, modes, commands, ancestries = t.ids, t.mode, t.command, t.ancestry
        for row, with_limits, code, seen, seq, soc, battery, solar, load, grid, temp in columns:
            status = STATUS_NAMES[code]
            site_id = ids[row]
            fields: dict[str, str | float | int] = {"site_id": site_id, "status": status, "as_of": now}
            ancestry = ancestries[row]
            if seen != NONE:
                fields.update(last_seen=seen, seq=seq, soc_pct=soc, battery_kw=battery, solar_kw=solar,
                              load_kw=load, grid_kw=grid, mode=modes[row],
                              battery_temp_c="" if math.isnan(temp) else temp,
                              active_command_id=commands[row] or "")
            if ancestry is not None:
                if with_limits:
                    fields.update(
                        ancestry_version=ancestry.version, capacity_kwh=ancestry.capacity_kwh,
                        reserve_pct=ancestry.reserve_pct, max_charge_kw=ancestry.max_charge_kw,
                        max_discharge_kw=ancestry.max_discharge_kw, region=ancestry.region)
                if seen != NONE:
                    fields["energy_available_kwh"] = tw.energy_available_kwh(soc, ancestry.capacity_kwh,
                                                                             ancestry.reserve_pct)
                    fields["charge_headroom_kwh"] = tw.charge_headroom_kwh(soc, ancestry.capacity_kwh)
            version = ((0 if seen == NONE else seen) * 4 + tw.STATUS_RANK[status],
                       ancestry.version if ancestry is not None else 0)
            out.twins[site_id] = (version, fields)
        t.dirty[:n] = False
        t.new_limits[:n] = False

    # ---- the twins and their contributions -------------------------------------------------

    def _refresh(self, rows: I64, now: int, out: ShardOutput) -> None:
        """Bring the status and contribution of ``rows`` up to ``now`` and send what changed.

        Differences are summed per chain of ancestors and then per node (:meth:`ChainTable.node_sums`),
        for all rows at once.
        """
        cfg, t = self.config, self.table
        last = t.event_ms[rows]
        heard = last != NONE
        age = np.where(heard, now - np.where(heard, last, 0), 0)
        status = np.where(~heard, UNKNOWN, np.where(age >= cfg.offline_after_ms, OFFLINE,
                                                     np.where(age >= cfg.delayed_after_ms, DELAYED,
                                                              ONLINE))).astype(np.int8)
        moved = np.flatnonzero(status != t.status[rows])
        for i in moved.tolist():
            row, seen = int(rows[i]), int(last[i]) if heard[i] else None
            name = STATUS_NAMES[status[i]]
            at = now if seen is None else _transition_time(name, seen, cfg)
            out.statuses.append((t.ids[row], name, STATUS_NAMES[t.status[row]], at, seen))
        t.status[rows] = status
        t.dirty[rows] = True
        sets = self._chain_sets(rows, now)
        vectors = contributions(t, rows, status, sets >= 0)
        stale = np.where(heard & ((status == DELAYED) | (status == OFFLINE)), last, NONE)
        old_sets, old_vectors, old_stale = t.sent_set[rows], t.sent[rows], t.sent_stale[rows]
        same = sets == old_sets
        diffs = vectors - old_vectors
        sending = same & diffs.any(axis=1)
        parts_sets, parts = [sets[sending]], [diffs[sending]]
        moved_sets = np.flatnonzero(~same)
        if len(moved_sets):  # membership changed: take the old vector from the old chains, add the new
            parts_sets += [old_sets[moved_sets], sets[moved_sets]]
            parts += [-old_vectors[moved_sets], vectors[moved_sets]]
        all_sets, all_diffs = np.concatenate(parts_sets), np.concatenate(parts)
        keep = all_sets >= 0
        self._send(out, *self.chains.node_sums(all_sets[keep], all_diffs[keep]))
        # Stale-list changes in order (a moved site leaves its old nodes' lists, then joins the new ones').
        listed = np.flatnonzero(same & (stale != old_stale))
        leaving = moved_sets[old_stale[moved_sets] != NONE]
        joining = moved_sets[stale[moved_sets] != NONE]
        positions = np.concatenate([listed, leaving, joining])
        if len(positions):
            values = np.concatenate([stale[listed], np.full(len(leaving), NONE, dtype=np.int64),
                                     stale[joining]])
            self._stale(out, np.concatenate([sets[listed], old_sets[leaving], sets[joining]]),
                        rows[positions], values)
        t.sent[rows] = vectors
        t.sent_set[rows] = sets
        t.sent_stale[rows] = stale
        deadline = np.where(status == ONLINE, last + cfg.delayed_after_ms,
                            np.where(status == DELAYED, last + cfg.offline_after_ms, NEVER))
        t.recheck[rows] = np.minimum(np.where(heard, deadline, NEVER), t.chain_until[rows])

    def _chain_sets(self, rows: I64, now: int) -> I64:
        """The chain set of each of ``rows`` at ``now`` (-1: none), looked up again only where the
        answer kept in the columns has run out (:meth:`Ancestry.chains_at`)."""
        t = self.table
        stale = np.flatnonzero((t.chain_from[rows] > now) | (now >= t.chain_until[rows]))
        for row in rows[stale].tolist():
            ancestry = t.ancestry[row]
            if ancestry is None:
                chains, until = (), None
            else:
                chains, until = ancestry.chains_at(now)
            t.chain_set[row] = self.chains.intern(chains)
            t.chain_from[row] = now
            t.chain_until[row] = NEVER if until is None else until
        return t.chain_set[rows]

    def _send(self, out: ShardOutput, nodes: I64, sums: I64) -> None:
        """Add the summed differences ``sums`` of node numbers ``nodes`` to their groups' changes."""
        table = self.chains
        names, meta = table.nodes, table.meta
        groups = table.groups(self._group_of)[nodes].tolist()
        for number, group, delta in zip(nodes.tolist(), groups, sums.tolist(), strict=True):
            changes = out.groups.get(group)
            if changes is None:
                changes = out.groups[group] = NodeChanges(clock_ms=self.clock.now_ms, shard=self.shard)
            node = names[number]
            changes.meta[node] = meta[number]
            total = changes.deltas.get(node)
            changes.deltas[node] = delta if total is None else list(map(operator.add, total, delta))

    def _stale(self, out: ShardOutput, sets: I64, rows: I64, last_seen: I64) -> None:
        """List row ``rows[i]`` as stale (last seen ``last_seen[i]``; NONE: no longer listed) at every
        node of chain set ``sets[i]`` (-1: none), later entries overriding earlier ones: grouped by
        node, so a node's list takes all its entries in one update."""
        table = self.chains
        reach = sets >= 0
        if not reach.any():
            return
        sets, rows, last_seen = sets[reach], rows[reach], last_seen[reach]
        matrix = table.set_nodes()[sets]
        entry = np.repeat(np.arange(len(sets)), matrix.shape[1])
        flat = matrix.ravel()
        valid = flat >= 0
        flat, entry = flat[valid], entry[valid]
        order = np.argsort(flat, kind="stable")  # by node; within a node, in the order given
        flat, entry = flat[order], entry[order]
        starts = np.flatnonzero(np.r_[True, flat[1:] != flat[:-1]]).tolist()
        ids = self.table.ids
        site_ids = [ids[row] for row in rows[entry].tolist()]
        values = [None if value == NONE else value for value in last_seen[entry].tolist()]
        groups = table.groups(self._group_of)
        for start, end in zip(starts, [*starts[1:], len(flat)], strict=True):
            number = int(flat[start])
            node = table.nodes[number]
            group = int(groups[number])
            changes = out.groups.get(group)
            if changes is None:
                changes = out.groups[group] = NodeChanges(clock_ms=self.clock.now_ms, shard=self.shard)
            entries = zip(site_ids[start:end], values[start:end], strict=True)
            changes.stale.setdefault(node, {}).update(entries)

    def _group_of(self, node: str) -> int:
        return bucket_of(node, self.config.node_groups)

    def _changes(self, out: ShardOutput, node: str) -> NodeChanges:
        group = bucket_of(node, self.config.node_groups)
        changes = out.groups.get(group)
        if changes is None:
            changes = out.groups[group] = NodeChanges(clock_ms=self.clock.now_ms, shard=self.shard)
        return changes

    # ---- minute windows --------------------------------------------------------------------

    def _close_minutes(self, now: int, out: ShardOutput) -> None:
        """Close every minute whose end plus the allowed lateness has passed."""
        if now <= 0:  # no event time yet: nothing to close
            return
        closed_before = minute_of(now - self.config.lateness_ms - 60_000) + 60_000
        previous = self.closed_before_ms
        if previous is not None and closed_before <= previous:
            return
        self.closed_before_ms = closed_before
        closing: dict[int, dict[int, MinuteWindow]] = {}
        if previous is not None and self.first_minute_ms is not None:
            # Minutes in which none of this shard's sites reported still count its members as
            # expected (bounded, so a shard idle for days does not write days of empty minutes).
            first = max(previous, self.first_minute_ms, closed_before - MAX_SILENT_MINUTES * 60_000)
            closing = {minute: {} for minute in range(first, closed_before, 60_000)}
        for minute in [m for m in self.windows if m < closed_before]:
            columns = self.windows.pop(minute)
            closing[minute] = {row: window for row in columns.rows()
                               if (window := columns.window(row)) is not None}
        expected = self.config.expected_samples_per_minute
        t = self.table
        for minute, windows in sorted(closing.items()):
            for row, window in windows.items():
                capacity, reserve = ((t.ancestry[row].capacity_kwh, t.ancestry[row].reserve_pct)
                                     if t.ancestry[row] is not None else (0.0, 0.0))
                out.site_rows.append(window.site_row(t.ids[row], minute, capacity, reserve, expected))
            self._node_minutes(minute, windows, out)
        if self.config.backfill_horizon_ms > 0:
            self._keep_for_backfill(closing, closed_before, now)
            self._keep_unplaced(closing, closed_before)

    # ---- backfill (operators.backfill) ----------------------------------------------------

    def _keep_for_backfill(self, closing: dict[int, dict[int, MinuteWindow]], closed_before: int,
                           now: int) -> None:
        """Keep the closed windows late readings may still complete; forget what left the horizon.

        Once per close (a minute): the quiet sites are found over the columns at once; only sites
        with backfill state (quiet or returned within the horizon) are looked at one by one.
        """
        horizon = self.config.backfill_horizon_ms
        first_closing = min(closing, default=closed_before)
        t = self.table
        seen = t.event_ms[:t.n]
        for row in np.flatnonzero((seen != NONE) & (seen < closed_before)).tolist():  # quiet: maybe cut off
            site_id = t.ids[row]
            entry = self.backfill.get(site_id)
            if entry is None:
                # From the minute of its last reading: minutes before it closed while it reported, even
                # when a batch spanning minutes closes several at once (the floor does not depend on
                # how the input was batched).
                floor = max(first_closing, minute_of(int(seen[row])))
                self.backfill[site_id] = SiteBackfill(floor, now + horizon)
            else:
                entry.until_ms = now + horizon
        for site_id, entry in list(self.backfill.items()):
            if now >= entry.until_ms:
                del self.backfill[site_id]
                continue
            row = t.index[site_id]
            for minute, windows in closing.items():
                window = windows.get(row)
                if window is not None:
                    entry.windows[minute] = KeptWindow(window, 1)
            entry.expire(closed_before - horizon)

    def _note_returns(self, rows: I64, event: I64, wall_ms: int) -> None:
        """Find sites heard again after a gap: ``rows`` and ``event`` are a batch sorted by site, then
        event time. A reading more than the DELAYED age after the site's previous one (held, or
        earlier in the batch) ends a gap: the site's uploads may come after the minutes of the gap
        close, so its closed windows are kept from the gap's minute on (:meth:`_returned`)."""
        held = self.table.event_ms[rows]
        first = np.r_[True, rows[1:] != rows[:-1]]
        before = np.r_[NONE, event[:-1]]
        previous = np.where(first, held, np.maximum(held, before))
        known = previous != NONE
        gap = event - np.where(known, previous, event)
        gaps = np.flatnonzero(known & (gap > self.config.delayed_after_ms))
        for i in gaps.tolist():
            self._returned(self.table.ids[int(rows[i])], int(previous[i]), wall_ms)

    def _returned(self, site_id: str, last_before_ms: int, wall_ms: int) -> None:
        """A site is heard again after a gap (its last reading before it at ``last_before_ms``): keep
        its windows from the gap's minute on."""
        gap_minute = minute_of(last_before_ms)
        until = max(self.clock.now_ms, wall_ms) + self.config.backfill_horizon_ms
        entry = self.backfill.get(site_id)
        if entry is None:
            self.backfill[site_id] = SiteBackfill(gap_minute, until)
        else:
            entry.until_ms = max(entry.until_ms, until)

    def _backfill(self, late: I64, rows: I64, seq: I64, event: I64, floats: dict[str, F64],
                  out: ShardOutput) -> int:
        """Add the late readings at positions ``late`` to the kept windows of their minutes, write
        the completed site minutes again and send the node groups the difference; returns how many
        were taken (the rest are late beyond repair). A loop: late readings are the rare case."""
        assert self.closed_before_ms is not None  # readings are late only once minutes closed
        oldest = self.closed_before_ms - self.config.backfill_horizon_ms
        #: Backfilled (row, minute)s and their node-minute share before this batch.
        corrected: dict[tuple[int, int], tuple[float, ...]] = {}
        taken = 0
        ids = self.table.ids
        columns = {name: floats[name][late].tolist() for name in ("soc", "battery", "solar", "load", "grid")}
        picked = zip(rows[late].tolist(), event[late].tolist(), seq[late].tolist(), strict=True)
        for i, (row, at, number) in enumerate(picked):
            entry = self.backfill.get(ids[row])
            minute = minute_of(at)
            if entry is None or minute < oldest:
                continue
            kept = entry.window_for(minute)
            if kept is None:
                continue
            if (row, minute) not in corrected:
                corrected[(row, minute)] = self._share(row, kept.window)
            kept.window.add(Reading(at, number, columns["soc"][i], columns["battery"][i], columns["solar"][i],
                                    columns["load"][i], columns["grid"][i], None, "", None))
            taken += 1  # a re-delivered reading is taken but not counted again (its sequence number)
        if corrected:
            self._correct(corrected, out)
        return taken

    # ---- sites whose ancestry comes after their first minutes -----------------------------------

    def _keep_unplaced(self, closing: dict[int, dict[int, MinuteWindow]], closed_before: int) -> None:
        """Keep the closed windows of sites in no node yet (no ancestry), within the backfill horizon:
        their node minutes are counted when the ancestry comes (:meth:`_count_in_nodes`)."""
        t = self.table
        for row in [row for row, ancestry in enumerate(t.ancestry[:t.n].tolist()) if ancestry is None]:
            for minute, windows in closing.items():
                window = windows.get(row)
                if window is not None:
                    self.unplaced.setdefault(t.ids[row], {})[minute] = window
        oldest = closed_before - self.config.backfill_horizon_ms
        for site_id, windows in list(self.unplaced.items()):
            for minute in [minute for minute in windows if minute < oldest]:
                del windows[minute]
            if not windows:
                del self.unplaced[site_id]

    def _count_in_nodes(self, row: int, windows: dict[int, MinuteWindow], out: ShardOutput) -> None:
        """A site's first ancestry came after some of its minutes closed: those minutes' node shares
        left it out (a site without ancestry is in no node), so its kept windows go to its nodes now,
        as a backfilled reading's difference does. Seen on a loaded machine: a process that read its
        ``assets.changes`` partition late left a third of the sites out of the first node minutes."""
        ancestry = self.table.ancestry[row]
        for minute, window in windows.items():
            share = window.partial(ancestry.capacity_kwh, ancestry.reserve_pct)
            self._send_correction(ancestry, minute, share, out)

    def _send_correction(self, ancestry: Ancestry, minute: int, delta: Sequence[float],
                         out: ShardOutput) -> None:
        """Add ``delta`` to this shard's correction of every node minute ``ancestry`` puts the site in."""
        self._add_to_nodes(ancestry, minute, delta, out, corrections=True)

    def _add_to_nodes(self, ancestry: Ancestry, minute: int, part: Sequence[float], out: ShardOutput,
                      corrections: bool = False) -> None:
        """Add ``part`` to this shard's share (or its correction) of every node minute ``ancestry`` puts
        the site in."""
        for path in ancestry.paths_at(minute):
            for depth, node in enumerate(path.node_ids):
                changes = self._changes(out, node)
                sums = changes.corrections if corrections else changes.minutes
                total = sums.get((node, minute))
                if total is None:
                    sums[(node, minute)] = list(part)
                else:
                    add_into(total, part)
                changes.meta.setdefault(node, (path.hierarchy, node_kind(path.hierarchy, depth)))

    def _correct(self, corrected: dict[tuple[int, int], tuple[float, ...]], out: ShardOutput) -> None:
        """Write the backfilled site minutes again and send the node groups the difference."""
        expected = self.config.expected_samples_per_minute
        t = self.table
        for (row, minute), before in corrected.items():
            site_id = t.ids[row]
            kept = self.backfill[site_id].windows[minute]
            after = self._share(row, kept.window)
            if after == before:  # only re-deliveries
                continue
            kept.version += 1
            ancestry = t.ancestry[row]
            capacity, reserve = (ancestry.capacity_kwh, ancestry.reserve_pct) if ancestry else (0.0, 0.0)
            site_row = kept.window.site_row(site_id, minute, capacity, reserve, expected)
            out.site_rows.append(replace(site_row, version=kept.version))
            if ancestry is None:
                continue
            delta = [new - old for new, old in zip(after, before, strict=True)]
            self._send_correction(ancestry, minute, delta, out)

    def _share(self, row: int, window: MinuteWindow) -> tuple[float, ...]:
        """Row ``row``'s share of its node minutes from ``window`` (silent when it holds no sample)."""
        if window.samples == 0:
            return SILENT_PARTIAL
        ancestry = self.table.ancestry[row]
        capacity, reserve = (ancestry.capacity_kwh, ancestry.reserve_pct) if ancestry else (0.0, 0.0)
        return window.partial(capacity, reserve)

    def _node_minutes(self, minute: int, windows: dict[int, MinuteWindow], out: ShardOutput) -> None:
        """This shard's share of every node's minute: its member sites, reporting or not."""
        t = self.table
        for row, ancestry in enumerate(t.ancestry[:t.n].tolist()):
            if ancestry is None:
                continue
            window = windows.get(row)
            share = SILENT_PARTIAL if window is None else window.partial(ancestry.capacity_kwh,
                                                                         ancestry.reserve_pct)
            self._add_to_nodes(ancestry, minute, share, out)


def _why(reading: Reading, wall_ms: int, ancestry: Ancestry | None, rules: Rules) -> Implausible:
    """The plausibility verdict on a reading the shard's hot loop refused."""
    limits = None if ancestry is None else SiteLimits(ancestry.max_charge_kw, ancestry.max_discharge_kw)
    record = {**reading._asdict(), "event_time": reading.event_ms}
    verdict = check_telemetry(record, wall_ms, rules, limits)
    return verdict or Implausible(FUTURE_EVENT_TIME, "event time beyond the allowed skew")


def _transition_time(status: str, last_seen: int, cfg: ShardConfig) -> int:
    """When a status change happened: the deadline an ageing site passed, or the reading's time."""
    if status == tw.DELAYED:
        return last_seen + cfg.delayed_after_ms
    if status == tw.OFFLINE:
        return last_seen + cfg.offline_after_ms
    return last_seen

