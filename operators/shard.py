"""A shard of sites: the keyed state of the telemetry dataflow, as plain Python.

Keying the dataflow by site would pass every reading through Bytewax on its own
and send one message per ancestor node per reading. Keying by shard (a stable
hash of the site id into ``telemetry_shards`` buckets) lets one call handle a
whole batch of readings, and sends each node group one message per batch with
the summed changes of every node in it. The shard count is fixed for the life of
a recovery store; workers and processes can change.

Per batch, the shard updates each site's twin and minute windows. On each
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

import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any

from core.plausibility import FUTURE_EVENT_TIME, Implausible, Rules, SiteLimits, check_telemetry
from core.rows import SiteWindow
from operators.ancestry import Ancestry, node_kind
from operators.backfill import KeptWindow, SiteBackfill
from operators.clock import EventClock
from operators.twin import (
    DELAYED,
    OFFLINE,
    ZERO,
    Reading,
    SiteTwin,
    contribution,
    status_at,
    status_deadline,
)
from operators.windows import MINUTE_MS, SILENT_PARTIAL, MinuteWindow, add_into, minute_of

#: Summed contribution differences per chain of ancestors: (hierarchy, node ids nearest first).
PathSums = dict[tuple[str, tuple[str, ...]], list[int]]

#: The shape of the snapshot: 1, the Shard pickled whole with float vectors; 2, the same with integer
#: vectors; 3, a :class:`ShardState` (plain data, no config).
STATE_VERSION = 3
#: The first version with exact (integer) vectors.
EXACT_VECTORS = 2


def add_units(total: list[int], part: Sequence[int]) -> None:
    """``total += part``, element-wise, in place, for contribution vectors (exact: integers)."""
    for i, value in enumerate(part):
        total[i] += value


def _accumulate(acc: PathSums, chain: tuple[str, tuple[str, ...]], diff: Sequence[int]) -> None:
    total = acc.get(chain)
    if total is None:
        acc[chain] = list(diff)
    else:
        add_units(total, diff)


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


class Shard:
    """The sites of one shard and the clock they share."""

    def __init__(self, shard: int, config: ShardConfig) -> None:
        self.shard = shard
        self.config = config
        self.state_version = STATE_VERSION
        self.sites: dict[str, SiteTwin] = {}
        self.clock = EventClock(config.idle_ms, config.partitions, config.max_ahead_ms)
        #: Minutes starting before this are closed (None: none closed yet).
        self.closed_before_ms: int | None = None
        #: The earliest minute this shard has had a reading for: history starts there.
        self.first_minute_ms: int | None = None
        #: Sites with a newer reading or ancestry since the last tick: their contribution is
        #: refreshed (and the difference sent) once per tick, however many readings arrived.
        self._changed: set[str] = set()
        self._dirty_twins: set[str] = set()
        #: Sites whose limits (from a new ancestry) Redis has not been given yet.
        self._new_limits: set[str] = set()
        #: Closed windows late readings may still complete, per site (:mod:`operators.backfill`).
        self.backfill: dict[str, SiteBackfill] = {}

    def _twin(self, site_id: str) -> SiteTwin:
        twin = self.sites.get(site_id)
        if twin is None:
            twin = self.sites[site_id] = SiteTwin(site_id)
        return twin

    # ---- input ---------------------------------------------------------------------------

    def apply(self, readings: Iterable[tuple[str, Reading]], ancestries: Iterable[dict[str, Any]],
              wall_ms: int, source: str = "", source_max_ms: int = 0) -> ShardOutput:
        """Take in a batch of readings (all from input partition ``source``) and ancestry changes.

        ``source_max_ms`` is the newest event time that poll of ``source`` delivered to any shard.
        """
        out = ShardOutput()
        touched = self._changed
        for record in ancestries:
            twin = self._twin(record["site_id"])
            if twin.ancestry is None:
                twin.ancestry = Ancestry.from_record(record)
            elif not twin.ancestry.merge(record):
                continue
            touched.add(twin.site_id)
            self._new_limits.add(twin.site_id)
        closed_before = self.closed_before_ms if self.closed_before_ms is not None else -1
        sites = self.sites
        rules = self.config.rules
        ceiling = wall_ms + rules.max_ahead_ms if rules is not None else 0
        margin = rules.rating_margin if rules is not None else 0.0
        newest = min(source_max_ms, ceiling) if rules is not None else source_max_ms
        #: Backfilled (site, minute)s and their node-minute share before this batch.
        corrected: dict[tuple[str, int], tuple[float, ...]] = {}
        gap_ms, horizon_ms = self.config.delayed_after_ms, self.config.backfill_horizon_ms
        # The hot loop of the dataflow: kept flat (no helper calls but for refusals) on purpose.
        for index, (site_id, reading) in enumerate(readings):
            known = sites.get(site_id)
            event_ms = reading.event_ms
            if rules is not None:
                limits = known.ancestry if known is not None else None
                if event_ms > ceiling or (limits is not None and not (
                        -limits.max_charge_kw * margin <= reading.battery_kw
                        <= limits.max_discharge_kw * margin)):
                    out.rejected.append((index, _why(reading, wall_ms, known, rules)))
                    continue
            twin = known if known is not None else sites.setdefault(site_id, SiteTwin(site_id))
            newest = max(newest, event_ms)
            minute = event_ms - event_ms % MINUTE_MS
            if minute < closed_before:
                if self._backfill(twin, minute, reading, corrected):
                    out.backfilled_readings += 1
                else:
                    out.late_readings += 1
            else:
                window = twin.windows.get(minute)
                if window is None:
                    window = twin.windows[minute] = MinuteWindow()
                    if self.first_minute_ms is None or minute < self.first_minute_ms:
                        self.first_minute_ms = minute
                window.add(reading)
            held = twin.reading
            if held is None or (event_ms, reading.seq) > (held.event_ms, held.seq):
                if held is not None and event_ms - held.event_ms > gap_ms and horizon_ms:
                    self._returned(site_id, held.event_ms, wall_ms)
                twin.reading = reading
                touched.add(site_id)
        if corrected:
            self._correct(corrected, out)
        if newest:
            self.clock.observe(source, newest, wall_ms)
        now = self.clock.advance(wall_ms)
        # Closing here as well as on ticks makes "too late" a matter of event time only,
        # not of how batches happened to meet the wall clock.
        self._close_minutes(now, out)
        return out

    # ---- restore --------------------------------------------------------------------------

    def restored(self, config: ShardConfig, wall_ms: int) -> None:
        """Make a shard just unpickled from a snapshot safe to run on at wall time ``wall_ms``.

        A snapshot from a newer state version fails loudly; one from before exact rollups re-sends
        every contribution (its node groups start from zero, :meth:`NodeGroup.restored`); a clock,
        twin or window beyond the wall clock plus the allowed skew is brought back within it.
        """
        version = getattr(self, "state_version", 1)
        _check_version(version)
        self.config = config
        self.clock.max_ahead_ms = config.max_ahead_ms
        if not hasattr(self, "backfill"):  # pickled before backfill
            self.backfill = {}
        if version < EXACT_VECTORS:
            for twin in self.sites.values():
                twin.sent_vector, twin.sent_chains, twin.sent_stale_ms = ZERO, (), None
            self._changed.update(self.sites)
            self.state_version = STATE_VERSION
        self._repair(wall_ms)

    def state(self) -> ShardState:
        """The shard as plain data, for a snapshot (the clock's wall-time bookkeeping is not kept)."""
        return ShardState(self.shard, tuple(self.sites.items()), self.clock.now_ms,
                          tuple(self.clock.partition_max.items()), self.closed_before_ms,
                          self.first_minute_ms, tuple(self._changed), tuple(self._dirty_twins),
                          tuple(self._new_limits), backfill=tuple(self.backfill.items()))

    @classmethod
    def from_state(cls, state: ShardState, config: ShardConfig, wall_ms: int) -> Shard:
        """The shard ``state`` describes, run by ``config``, safe to run on at wall time ``wall_ms``."""
        _check_version(state.version)
        shard = cls(state.shard, config)
        shard.sites = dict(state.sites)
        shard.clock.now_ms, shard.clock.partition_max = state.clock_ms, dict(state.partition_max)
        shard.closed_before_ms, shard.first_minute_ms = state.closed_before_ms, state.first_minute_ms
        shard._changed, shard._dirty_twins = set(state.changed), set(state.dirty_twins)
        shard._new_limits = set(state.new_limits)
        shard.backfill = dict(state.backfill)
        shard._repair(wall_ms)
        return shard

    def _repair(self, wall_ms: int) -> None:
        """Bring back within the bound what trusted a device's clock: the shard clock, twins, windows."""
        ceiling = self.clock.ceiling(wall_ms)
        if ceiling is None:
            return
        poisoned = self.clock.clamp(wall_ms)
        for twin in self.sites.values():
            if twin.reading is not None and twin.reading.event_ms > ceiling:
                twin.reading = None  # the next current reading takes its place
                poisoned = True
            for minute in [m for m in twin.windows if m > ceiling]:
                del twin.windows[minute]
                poisoned = True
        if self.closed_before_ms is not None and self.closed_before_ms > ceiling:
            now = self.clock.now_ms
            self.closed_before_ms = (minute_of(now - self.config.lateness_ms - 60_000) + 60_000
                                     if now > 0 else None)
            poisoned = True
        if self.first_minute_ms is not None and self.first_minute_ms > ceiling:
            self.first_minute_ms = min((m for t in self.sites.values() for m in t.windows), default=None)
        if poisoned:  # every status and contribution is looked at again against the repaired clock
            for twin in self.sites.values():
                twin.recheck_ms = None
            self._changed.update(self.sites)

    # ---- time ----------------------------------------------------------------------------

    def tick(self, wall_ms: int, flush_twins: bool = True) -> ShardOutput:
        """Send the changed contributions, age silent sites, apply due membership changes, close
        minutes, write changed twins."""
        out = ShardOutput()
        now = self.clock.advance(wall_ms)
        acc: PathSums = {}
        for site_id in self._changed:
            self._refresh(self.sites[site_id], now, out, acc)
        self._changed.clear()
        for twin in self.sites.values():
            if twin.recheck_ms is not None and twin.recheck_ms <= now:
                self._refresh(twin, now, out, acc)
        self._expand(acc, out)
        self._close_minutes(now, out)
        if flush_twins:
            self._flush_twins(now, out)
        return out

    def _flush_twins(self, now: int, out: ShardOutput) -> None:
        for site_id in self._dirty_twins:
            twin = self.sites[site_id]
            out.twins[site_id] = (twin.version(), twin.redis_fields(now, site_id in self._new_limits))
        self._dirty_twins.clear()
        self._new_limits.clear()

    # ---- the twin and its contribution ----------------------------------------------------

    def _refresh(self, twin: SiteTwin, now: int, out: ShardOutput, acc: PathSums) -> None:
        """Bring a twin's status and contribution up to ``now``; add what changed to ``acc``.

        Differences are summed per chain of ancestors (one per hierarchy) rather than per node:
        sites share chains, so expanding the sums to nodes afterwards (:meth:`_expand`) costs far
        fewer vector additions than adding every site to each of its nodes.
        """
        cfg = self.config
        last_seen = twin.last_seen_ms
        status = status_at(now, last_seen, cfg.delayed_after_ms, cfg.offline_after_ms)
        if status != twin.status:
            at = now if last_seen is None else _transition_time(status, last_seen, cfg)
            out.statuses.append((twin.site_id, status, twin.status, at, last_seen))
            twin.status = status
        self._dirty_twins.add(twin.site_id)
        ancestry = twin.ancestry
        chains, change = ancestry.chains_at(now) if ancestry is not None else ((), None)
        vector = contribution(twin.reading, status, ancestry) if chains and ancestry else ZERO
        stale_ms = last_seen if status in (DELAYED, OFFLINE) else None
        old_chains = twin.sent_chains
        if chains == old_chains:
            if vector != twin.sent_vector:
                diff = [new - old for new, old in zip(vector, twin.sent_vector, strict=True)]
                for chain in chains:
                    _accumulate(acc, chain, diff)
            if stale_ms != twin.sent_stale_ms:
                for _, nodes in chains:
                    for node in nodes:
                        self._stale(out, node, twin.site_id, stale_ms)
        else:
            negative = [-v for v in twin.sent_vector]
            for chain in old_chains:
                _accumulate(acc, chain, negative)
                if twin.sent_stale_ms is not None:
                    for node in chain[1]:
                        self._stale(out, node, twin.site_id, None)
            for chain in chains:
                _accumulate(acc, chain, vector)
                if stale_ms is not None:
                    for node in chain[1]:
                        self._stale(out, node, twin.site_id, stale_ms)
        twin.sent_vector = vector
        twin.sent_chains = chains
        twin.sent_stale_ms = stale_ms
        deadline = None if last_seen is None else status_deadline(
            status, last_seen, cfg.delayed_after_ms, cfg.offline_after_ms)
        pending = [t for t in (deadline, change) if t is not None]
        twin.recheck_ms = min(pending) if pending else None

    def _expand(self, acc: PathSums, out: ShardOutput) -> None:
        """Send the summed differences of each chain to every node on it."""
        for (hierarchy, nodes), diff in acc.items():
            for depth, node in enumerate(nodes):
                changes = self._changes(out, node)
                changes.meta[node] = (hierarchy, node_kind(hierarchy, depth))
                total = changes.deltas.get(node)
                if total is None:
                    changes.deltas[node] = list(diff)
                else:
                    add_units(total, diff)

    def _changes(self, out: ShardOutput, node: str) -> NodeChanges:
        group = bucket_of(node, self.config.node_groups)
        changes = out.groups.get(group)
        if changes is None:
            changes = out.groups[group] = NodeChanges(clock_ms=self.clock.now_ms, shard=self.shard)
        return changes

    def _stale(self, out: ShardOutput, node: str, site_id: str, last_seen_ms: int | None) -> None:
        self._changes(out, node).stale.setdefault(node, {})[site_id] = last_seen_ms

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
        closing: dict[int, dict[str, MinuteWindow]] = {}
        if previous is not None and self.first_minute_ms is not None:
            # Minutes in which none of this shard's sites reported still count its members as
            # expected (bounded, so a shard idle for days does not write days of empty minutes).
            first = max(previous, self.first_minute_ms, closed_before - MAX_SILENT_MINUTES * 60_000)
            closing = {minute: {} for minute in range(first, closed_before, 60_000)}
        for twin in self.sites.values():
            due = [m for m in twin.windows if m < closed_before]
            for minute in due:
                closing.setdefault(minute, {})[twin.site_id] = twin.windows.pop(minute)
        expected = self.config.expected_samples_per_minute
        for minute, windows in sorted(closing.items()):
            for site_id, window in windows.items():
                ancestry = self.sites[site_id].ancestry
                capacity, reserve = (ancestry.capacity_kwh, ancestry.reserve_pct) if ancestry else (0.0, 0.0)
                out.site_rows.append(window.site_row(site_id, minute, capacity, reserve, expected))
            self._node_minutes(minute, windows, out)
        if self.config.backfill_horizon_ms > 0:
            self._keep_for_backfill(closing, closed_before, now)

    # ---- backfill (operators.backfill) ----------------------------------------------------

    def _keep_for_backfill(self, closing: dict[int, dict[str, MinuteWindow]], closed_before: int,
                           now: int) -> None:
        """Keep the closed windows late readings may still complete; forget what left the horizon.

        Once per close (a minute), over every site, like the node-minute shares.
        """
        horizon = self.config.backfill_horizon_ms
        first_closing = min(closing, default=closed_before)
        for site_id, twin in self.sites.items():
            reading = twin.reading
            entry = self.backfill.get(site_id)
            if reading is not None and reading.event_ms < closed_before:  # quiet: maybe cut off
                if entry is None:
                    entry = self.backfill[site_id] = SiteBackfill(first_closing, now + horizon)
                entry.until_ms = now + horizon
            if entry is None:
                continue
            if now >= entry.until_ms:
                del self.backfill[site_id]
                continue
            for minute, windows in closing.items():
                window = windows.get(site_id)
                if window is not None:
                    entry.windows[minute] = KeptWindow(window, 1)
            entry.expire(closed_before - horizon)

    def _returned(self, site_id: str, last_before_ms: int, wall_ms: int) -> None:
        """A site is heard again after a gap (its last reading before it at ``last_before_ms``): its
        uploads may come after the minutes of the gap close, so keep them from the gap's minute on."""
        gap_minute = minute_of(last_before_ms)
        until = max(self.clock.now_ms, wall_ms) + self.config.backfill_horizon_ms
        entry = self.backfill.get(site_id)
        if entry is None:
            self.backfill[site_id] = SiteBackfill(gap_minute, until)
        else:
            entry.until_ms = max(entry.until_ms, until)

    def _backfill(self, twin: SiteTwin, minute: int, reading: Reading,
                  corrected: dict[tuple[str, int], tuple[float, ...]]) -> bool:
        """Add a late reading to the kept window of its minute; False when no window can take it."""
        entry = self.backfill.get(twin.site_id)
        if entry is None or self.closed_before_ms is None or (
                minute < self.closed_before_ms - self.config.backfill_horizon_ms):
            return False
        kept = entry.window_for(minute)
        if kept is None:
            return False
        key = (twin.site_id, minute)
        if key not in corrected:
            corrected[key] = _share(twin, kept.window)
        kept.window.add(reading)  # a re-delivered reading is not counted again
        return True

    def _correct(self, corrected: dict[tuple[str, int], tuple[float, ...]], out: ShardOutput) -> None:
        """Write the backfilled site minutes again and send the node groups the difference."""
        expected = self.config.expected_samples_per_minute
        for (site_id, minute), before in corrected.items():
            twin = self.sites[site_id]
            kept = self.backfill[site_id].windows[minute]
            after = _share(twin, kept.window)
            if after == before:  # only re-deliveries
                continue
            kept.version += 1
            ancestry = twin.ancestry
            capacity, reserve = (ancestry.capacity_kwh, ancestry.reserve_pct) if ancestry else (0.0, 0.0)
            row = kept.window.site_row(site_id, minute, capacity, reserve, expected)
            out.site_rows.append(replace(row, version=kept.version))
            if ancestry is None:
                continue
            delta = [new - old for new, old in zip(after, before, strict=True)]
            for path in ancestry.paths_at(minute):
                for depth, node in enumerate(path.node_ids):
                    changes = self._changes(out, node)
                    total = changes.corrections.get((node, minute))
                    if total is None:
                        changes.corrections[(node, minute)] = list(delta)
                    else:
                        add_into(total, delta)
                    changes.meta.setdefault(node, (path.hierarchy, node_kind(path.hierarchy, depth)))

    def _node_minutes(self, minute: int, windows: dict[str, MinuteWindow], out: ShardOutput) -> None:
        """This shard's share of every node's minute: its member sites, reporting or not."""
        for twin in self.sites.values():
            ancestry = twin.ancestry
            if ancestry is None:
                continue
            window = windows.get(twin.site_id)
            share = SILENT_PARTIAL if window is None else window.partial(ancestry.capacity_kwh,
                                                                         ancestry.reserve_pct)
            for path in ancestry.paths_at(minute):
                for depth, node in enumerate(path.node_ids):
                    changes = self._changes(out, node)
                    total = changes.minutes.get((node, minute))
                    if total is None:
                        changes.minutes[(node, minute)] = list(share)
                    else:
                        add_into(total, share)
                    changes.meta.setdefault(node, (path.hierarchy, node_kind(path.hierarchy, depth)))


def _share(twin: SiteTwin, window: MinuteWindow) -> tuple[float, ...]:
    """A site's share of its node minutes from ``window`` (silent when it holds no sample)."""
    if window.samples == 0:
        return SILENT_PARTIAL
    ancestry = twin.ancestry
    capacity, reserve = (ancestry.capacity_kwh, ancestry.reserve_pct) if ancestry else (0.0, 0.0)
    return window.partial(capacity, reserve)


def _why(reading: Reading, wall_ms: int, twin: SiteTwin | None, rules: Rules) -> Implausible:
    """The plausibility verdict on a reading the shard's hot loop refused."""
    ancestry = twin.ancestry if twin is not None else None
    limits = None if ancestry is None else SiteLimits(ancestry.max_charge_kw, ancestry.max_discharge_kw)
    record = {**reading._asdict(), "event_time": reading.event_ms}
    verdict = check_telemetry(record, wall_ms, rules, limits)
    return verdict or Implausible(FUTURE_EVENT_TIME, "event time beyond the allowed skew")


def _transition_time(status: str, last_seen: int, cfg: ShardConfig) -> int:
    """When a status change happened: the deadline an ageing site passed, or the reading's time."""
    if status == DELAYED:
        return last_seen + cfg.delayed_after_ms
    if status == OFFLINE:
        return last_seen + cfg.offline_after_ms
    return last_seen

