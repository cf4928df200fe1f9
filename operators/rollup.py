"""Live node aggregates and node minutes, summed from the changes the shards send.

A node group holds the nodes whose ids hash to it (any hierarchy). Each node
keeps the running sum of its member sites' contributions (measured from ONLINE
sites, an estimate from every site's last known values, and the counts), the
members that are not reporting with the time each was last seen (for the age of
the oldest knowledge), and emits its aggregate at most once per emission
interval, and only when something changed.

The sums are integers (fixed-point units, :mod:`operators.twin`): a node's sum
is exactly the sum of its members' current contributions, however many
differences built it, and only the emitted NodeAggregate turns it into kW/kWh.

Node minutes arrive as one share per shard; a share replaces that shard's earlier
share of the same minute (a replay after a crash sends the same share again), and
every emission writes the sum so far with a newer version, so the history table
keeps the most complete row. A backfilled reading (:mod:`operators.backfill`)
arrives as a correction: the difference it made to its shard's share, added to
that share, and the minute is written again. Minutes are kept long enough for
that (the retention covers the backfill horizon).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from core.rows import NodeWindow
from operators import twin as v
from operators.shard import NodeChanges, add_units
from operators.windows import (
    P_BATTERY,
    P_BATTERY_MAX,
    P_BATTERY_MIN,
    P_ENERGY,
    P_EXPECTED,
    P_GRID,
    P_HEADROOM,
    P_LOAD,
    P_REPORTING,
    P_SOLAR,
    PARTIAL_SIZE,
    add_into,
)
from schemas.times import from_epoch_ms


@dataclass(slots=True)
class NodeState:
    """One node's running sums."""

    hierarchy: str
    kind: str
    #: The members' summed contributions, integers as in :func:`operators.twin.contribution`.
    total: list[int] = field(default_factory=lambda: [0] * v.VECTOR_SIZE)
    stale: dict[str, int] = field(default_factory=dict)
    clock_ms: int = 0
    seq: int = 0
    dirty: bool = False


@dataclass(slots=True)
class NodeMinute:
    """The shares of one node's minute received so far, by shard."""

    hierarchy: str
    shares: dict[int, list[float]] = field(default_factory=dict)
    dirty: bool = True


@dataclass(slots=True)
class GroupOutput:
    aggregates: list[dict[str, Any]] = field(default_factory=list)
    node_rows: list[NodeWindow] = field(default_factory=list)


#: The shape of the snapshot: 1, the NodeGroup pickled whole with float sums; 2, the same with
#: integer sums; 3, a :class:`NodeGroupState` (plain data, no config).
STATE_VERSION = 3
#: The first version with exact (integer) sums.
EXACT_SUMS = 2


@dataclass(frozen=True)
class NodeGroupState:
    """What a node group snapshots: its nodes and minutes as plain data; the retention is the
    settings' (:meth:`NodeGroup.from_state`). A new field is one line here and one in each of
    :meth:`NodeGroup.state` and :meth:`NodeGroup.from_state`."""

    nodes: tuple[tuple[str, NodeState], ...]
    minutes: tuple[tuple[tuple[str, int], NodeMinute], ...]
    clock_ms: int
    pending: bool
    last_row_version: int
    version: int = STATE_VERSION


class NodeGroup:
    """The nodes of one group; :meth:`apply` takes shard changes, :meth:`emit` says what changed."""

    def __init__(self, retention_ms: int) -> None:
        self.nodes: dict[str, NodeState] = {}
        self.minutes: dict[tuple[str, int], NodeMinute] = {}
        self.clock_ms = 0
        self.retention_ms = retention_ms
        #: Something changed since the last :meth:`emit` (asked after every batch, so kept, not scanned).
        self.pending = False
        #: The version of the last node minute rows written: each emission's is strictly newer.
        self.last_row_version = 0
        #: Backfill corrections for minutes no longer kept (counted, for tests and logs; not snapshotted).
        self.lost_corrections = 0

    def state(self) -> NodeGroupState:
        """The group as plain data, for a snapshot."""
        return NodeGroupState(tuple(self.nodes.items()), tuple(self.minutes.items()), self.clock_ms,
                              self.pending, self.last_row_version)

    @classmethod
    def from_state(cls, state: NodeGroupState, retention_ms: int) -> NodeGroup:
        """The group ``state`` describes, keeping ``retention_ms`` of minutes; a newer version fails."""
        if state.version > STATE_VERSION:
            raise RuntimeError(f"node group snapshot has state version {state.version}, this code reads "
                               f"up to {STATE_VERSION}: run the newer code or start from an empty recovery "
                               "store")
        group = cls(retention_ms)
        group.nodes, group.minutes = dict(state.nodes), dict(state.minutes)
        group.clock_ms, group.pending, group.last_row_version = (state.clock_ms, state.pending,
                                                                 state.last_row_version)
        return group

    @classmethod
    def migrate(cls, old: NodeGroup) -> NodeGroupState:
        """A NodeGroup pickled whole (versions 1 and 2) as the current state.

        Version 1's float sums (which may have drifted or hold a NaN) start from zero, stale lists
        too: its shards, of the same age, re-send every member's whole contribution
        (:meth:`Shard.restored`).
        """
        if getattr(old, "state_version", 1) < EXACT_SUMS:
            for node in old.nodes.values():
                node.total = [0] * v.VECTOR_SIZE
                node.stale = {}
        return NodeGroupState(tuple(old.nodes.items()), tuple(old.minutes.items()), old.clock_ms,
                              getattr(old, "pending", True), getattr(old, "last_row_version", 0))

    def restored(self, wall_ms: int, max_ahead_ms: int) -> None:
        """Make a group just restored from a snapshot safe to run on at wall time ``wall_ms``.

        Clocks beyond the wall clock plus ``max_ahead_ms`` (left by code that trusted device time)
        are clamped, and node minutes beyond it dropped.
        """
        ceiling = wall_ms + max_ahead_ms
        if self.clock_ms > ceiling:
            self.clock_ms = wall_ms
        for node in self.nodes.values():
            if node.clock_ms > ceiling:
                node.clock_ms = wall_ms
        for key in [key for key in self.minutes if key[1] > ceiling]:
            del self.minutes[key]

    def apply(self, changes: NodeChanges) -> None:
        self.clock_ms = max(self.clock_ms, changes.clock_ms)
        if changes.deltas or changes.stale or changes.minutes or changes.corrections:
            self.pending = True
        for node_id, (hierarchy, kind) in changes.meta.items():
            if node_id not in self.nodes:
                self.nodes[node_id] = NodeState(hierarchy, kind)
        for node_id, delta in changes.deltas.items():
            node = self.nodes[node_id]
            add_units(node.total, delta)
            node.clock_ms = max(node.clock_ms, changes.clock_ms)
            node.dirty = True
        for node_id, entries in changes.stale.items():
            node = self.nodes[node_id]
            for site_id, last_seen in entries.items():
                if last_seen is None:
                    node.stale.pop(site_id, None)
                else:
                    node.stale[site_id] = last_seen
            node.dirty = True
        for (node_id, minute), share in changes.minutes.items():
            entry = self.minutes.get((node_id, minute))
            if entry is None:
                entry = self.minutes[(node_id, minute)] = NodeMinute(changes.meta[node_id][0])
            entry.shares[changes.shard] = share
            entry.dirty = True
        horizon = self.clock_ms - self.retention_ms
        for key, correction in changes.corrections.items():
            kept = self.minutes.get(key)
            if kept is None and key[1] >= horizon:  # no share yet: every member came in late
                kept = self.minutes[key] = NodeMinute(changes.meta[key[0]][0])
            if kept is None:  # beyond the retention: the backfill horizon keeps this from happening
                self.lost_corrections += 1
                continue
            own = kept.shares.get(changes.shard)
            if own is None:
                kept.shares[changes.shard] = list(correction)
            else:
                add_into(own, correction)
            kept.dirty = True

    def emit(self, wall_ms: int) -> GroupOutput:
        """Aggregates of nodes that changed and rows of minutes that changed since the last call."""
        out = GroupOutput()
        for node_id, node in self.nodes.items():
            if node.dirty:
                node.seq += 1
                node.dirty = False
                out.aggregates.append(aggregate_record(node_id, node))
        # Strictly newer than any row before, even for two emissions in one millisecond (at the end of
        # input, say): with equal versions the history table would keep either, maybe the partial one.
        version = max(wall_ms * 1000, self.last_row_version + 1)
        self.last_row_version = version
        horizon = self.clock_ms - self.retention_ms
        for key, entry in list(self.minutes.items()):
            if entry.dirty:
                out.node_rows.append(node_row(key[0], key[1], entry, version))
                entry.dirty = False
            elif key[1] < horizon:
                del self.minutes[key]
        self.pending = False
        return out


def aggregate_record(node_id: str, node: NodeState) -> dict[str, Any]:
    """The NodeAggregate value (Avro field names) of one node now."""
    t = node.total
    kw = v.from_units
    expected = t[v.EXPECTED]
    reporting = t[v.REPORTING]
    oldest = min(node.stale.values()) if node.stale else None
    return {
        "node_id": node_id, "hierarchy": node.hierarchy, "node_kind": node.kind,
        "event_time": from_epoch_ms(node.clock_ms), "seq": node.seq,
        "expected_sites": expected, "reporting_sites": reporting,
        "delayed_sites": t[v.DELAYED_COUNT], "offline_sites": t[v.OFFLINE_COUNT],
        "coverage": reporting / expected if expected else 0.0,
        "battery_kw": kw(t[v.BATTERY]), "solar_kw": kw(t[v.SOLAR]), "load_kw": kw(t[v.LOAD]),
        "grid_kw": kw(t[v.GRID]),
        "energy_available_kwh": kw(t[v.ENERGY]), "charge_headroom_kwh": kw(t[v.HEADROOM]),
        "available_discharge_kw": kw(t[v.AVAIL_DISCHARGE]), "available_charge_kw": kw(t[v.AVAIL_CHARGE]),
        "est_battery_kw": kw(t[v.EST_BATTERY]), "est_energy_available_kwh": kw(t[v.EST_ENERGY]),
        "est_charge_headroom_kwh": kw(t[v.EST_HEADROOM]),
        "est_available_discharge_kw": kw(t[v.EST_AVAIL_DISCHARGE]),
        "est_available_charge_kw": kw(t[v.EST_AVAIL_CHARGE]),
        "oldest_knowledge_age_s": 0.0 if oldest is None else max(0.0, (node.clock_ms - oldest) / 1000),
    }


def node_row(node_id: str, minute: int, entry: NodeMinute, version: int) -> NodeWindow:
    """The ``node_minute`` row from the shares received so far."""
    total = [0.0] * PARTIAL_SIZE
    for share in entry.shares.values():
        add_into(total, share)
    expected = round(total[P_EXPECTED])
    reporting = round(total[P_REPORTING])
    return NodeWindow(
        node_id=node_id, hierarchy=entry.hierarchy, start=from_epoch_ms(minute),
        battery_kw=total[P_BATTERY], battery_kw_min=total[P_BATTERY_MIN], battery_kw_max=total[P_BATTERY_MAX],
        solar_kw=total[P_SOLAR], load_kw=total[P_LOAD], grid_kw=total[P_GRID],
        energy_available_kwh=total[P_ENERGY], charge_headroom_kwh=total[P_HEADROOM],
        expected_sites=expected, reporting_sites=reporting,
        coverage=reporting / expected if expected else 0.0, version=version,
    )
