"""Every node's aggregate plan kept by differences: a changed site costs its chain, not the fleet. Pure.

:func:`siteplan.aggregate.aggregate` sums every member site's latest plan from
scratch; run each second over 10,000 sites or more, that full pass was most of
the plans step's time. :class:`NodeSums` holds, per node, the sums on one grid
of intervals and, per site, what it added (its :class:`Member` when applied).
When a site's plan, status, staleness or ancestors change, :meth:`NodeSums.apply`
takes back its old contribution from its old nodes and adds the new one to its
new nodes: O(changed sites x chain depth x steps). A move of the grid (every
interval) or a fresh start applies every site once to empty sums: the same
code, so the full and the incremental answer are one computation.

Sums are integers (:data:`UNITS_PER_KW` per kW, as the telemetry rollup's):
floats taken back and added again drift (``(a + b) - b != a``), integers do
not, so a node keeps exactly the sums a fresh computation of the same plans
gives, however many changes it has seen. A contribution is one row of
``3 x steps + 1`` integers: the power of an online site's plan per interval, of
an offline site's plan per interval, then per interval whether an online
(low 32 bits) or an offline (high bits) site's plan covers it, and last the site
itself (low) and whether its plan is stale (high). Two counts share an integer
because sums are linear and each count stays far below 2**31: one column
fewer to sum for every member of every node.

Plans are placed from their packed form (:func:`pack`: the powers as float64
bytes, which the plans step keeps for its snapshot anyway): a run of plans of
one shape becomes one matrix without a float conversion each.
"""

from __future__ import annotations

import heapq
import struct
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import groupby

import numpy as np
from numpy.typing import NDArray
from scipy import sparse

from siteplan.aggregate import MINUTE_MS, NodePlan, Plan

#: Integer units of power in the sums: a nanowatt-scale kW fraction, far below any plan's resolution.
UNITS_PER_KW = 1_000_000_000
#: Two counts in one integer: the second from this bit up.
HIGH = 32
LOW_MASK = (1 << HIGH) - 1
Rows = NDArray[np.int64]

#: (plan_id, issued_at ms, start ms, interval minutes, float64 powers as bytes, forecast issued ms).
PackedPlan = tuple[str, int, int, int, bytes, int | None]


def pack(plan: Plan) -> PackedPlan:
    """A plan as compact plain data: the snapshot's form and the one the sums place plans from."""
    powers = plan.power_kw  # struct packs a tuple of floats faster than array("d"), to the same bytes
    return (plan.plan_id, plan.issued_at_ms, plan.start_ms, plan.interval_minutes,
            struct.pack(f"={len(powers)}d", *powers), plan.forecast_issued_at_ms)


def unpack(site_id: str, packed: PackedPlan) -> Plan:
    plan_id, issued, start, minutes, powers, forecast = packed
    values = array("d")
    values.frombytes(powers)
    return Plan(site_id, plan_id, issued, start, minutes, tuple(values), forecast)


@dataclass(frozen=True, slots=True)
class Member:
    """What a member site adds to its nodes: its latest plan (if any), whether it is online, its nodes."""

    plan: PackedPlan | None
    online: bool
    #: Every ancestor node of the site in every hierarchy, each once.
    nodes: tuple[str, ...]


class NodeSums:
    """Per-node integer sums of the members' plans on a grid of ``steps`` intervals from ``start_ms``."""

    def __init__(self, steps: int, interval_minutes: int, stale_after_ms: int) -> None:
        self.steps = steps
        self.interval_minutes = interval_minutes
        self.stale_after_ms = stale_after_ms
        self.start_ms: int | None = None
        self.ids: list[str] = []
        self.index: dict[str, int] = {}
        self.totals: Rows = np.zeros((0, self.width), dtype=np.int64)
        #: site -> (the member as applied, whether its plan counted as stale then).
        self.applied: dict[str, tuple[Member, bool]] = {}
        #: (when a fresh plan turns stale, site, plan_id): sites to re-apply as time passes.
        self._turning: list[tuple[int, str, str]] = []

    @property
    def width(self) -> int:
        return 3 * self.steps + 1

    def reset(self, start_ms: int) -> None:
        """Empty sums on the grid from ``start_ms``: every site is to be applied again."""
        self.start_ms = start_ms
        self.totals[:] = 0
        self.applied.clear()
        self._turning.clear()

    def turned_stale(self, now_ms: int) -> list[str]:
        """Sites whose applied plan has turned stale by ``now_ms`` (to apply again)."""
        out = []
        while self._turning and self._turning[0][0] < now_ms:
            _, site, plan_id = heapq.heappop(self._turning)
            held = self.applied.get(site)
            if held is not None and held[0].plan is not None and held[0].plan[0] == plan_id:
                out.append(site)
        return out

    def apply(self, changes: Mapping[str, Member | None], now_ms: int) -> set[str]:
        """Take each changed site's old contribution back and add its new one (None: no longer a
        member); the nodes whose sums this touched."""
        if self.start_ms is None:
            raise ValueError("NodeSums.apply before reset: no grid yet")
        stale_before = now_ms - self.stale_after_ms
        old: list[tuple[Member, bool]] = []
        new: list[tuple[Member, bool]] = []
        for site, member in changes.items():
            held = self.applied.pop(site, None)
            stale = member is not None and _stale(member.plan, stale_before)
            if held is not None and member is not None and held == (member, stale):
                self.applied[site] = held
                continue
            if held is not None:
                old.append(held)
            if member is not None:
                new.append((member, stale))
                self.applied[site] = (member, stale)
                plan = member.plan
                if plan is not None and not stale and plan[5] is not None:
                    heapq.heappush(self._turning, (plan[5] + self.stale_after_ms, site, plan[0]))
        if not old and not new:
            return set()
        for node in {n for member, _ in new for n in member.nodes}:
            self._node(node)
        # Contributions of one plan shape and status side by side: each run is placed as one block.
        both = sorted([(m, stale, -1) for m, stale in old] + [(m, stale, 1) for m, stale in new],
                      key=lambda c: (_shape(c[0].plan), c[0].online))
        index = self.index
        nodes = np.fromiter((index[n] for member, _, _ in both for n in member.nodes), dtype=np.int64)
        depths = np.fromiter((len(member.nodes) for member, _, _ in both), dtype=np.int64, count=len(both))
        columns = np.repeat(np.arange(len(both), dtype=np.int64), depths)
        signs = np.fromiter((sign for _, _, sign in both), dtype=np.int64, count=len(both))
        touched, local = np.unique(nodes, return_inverse=True)
        # Touched node x changed contribution, -1 taking back, +1 adding: each difference is a product.
        change = sparse.csc_matrix((signs[columns], (local, columns)), shape=(len(touched), len(both)))
        self.totals[touched] += self._difference(change, both)
        return {self.ids[i] for i in touched}

    def _difference(self, change: sparse.csc_matrix,
                    contributions: Sequence[tuple[Member, bool, int]]) -> Rows:
        """What the contributions (in runs of one plan shape and status) add to the touched nodes.

        ``change`` maps each contribution (column) to its nodes (rows) with its sign. Per run only the
        block of intervals its plans cover is multiplied: the powers (online or offline columns) and,
        the same for every plan of the run, the coverage counts; the last column counts sites and
        stale plans. (One matrix of every contribution's whole row, mostly zeros, cost twice as much.)
        """
        s = self.steps
        out = np.zeros((change.shape[0], self.width), dtype=np.int64)
        out[:, 3 * s] = change @ np.fromiter((1 + (int(stale) << HIGH) for _, stale, _ in contributions),
                                             dtype=np.int64, count=len(contributions))
        assert self.start_ms is not None
        grid = self.start_ms + np.arange(s, dtype=np.int64) * self.interval_minutes * MINUTE_MS
        first = 0
        for ((start, minutes, length), online), run in groupby(
                contributions, key=lambda c: (_shape(c[0].plan), c[0].online)):
            block = [m.plan for m, _, _ in run]
            lo, first = first, first + len(block)
            if length == 0:
                continue  # no plan
            index = (grid - start) // (minutes * MINUTE_MS)
            inside = np.flatnonzero((index >= 0) & (index < length))
            if not len(inside):
                continue
            a, b = int(inside[0]), int(inside[-1]) + 1  # the grid is a run of consecutive intervals
            powers = np.frombuffer(b"".join(p[4] for p in block if p is not None),
                                   dtype=np.float64).reshape(len(block), length)
            units = np.rint(powers[:, index[a:b]] * UNITS_PER_KW).astype(np.int64)
            nodes_of_run = change[:, lo:first]
            power = slice(a, b) if online else slice(s + a, s + b)
            out[:, power] += nodes_of_run @ units
            counts = nodes_of_run @ np.ones(len(block), dtype=np.int64)
            out[:, 2 * s + a:2 * s + b] += (counts if online else counts << HIGH)[:, None]
        return out

    def node_plan(self, node_id: str) -> NodePlan:
        """The node's aggregate plan from its sums (all zero for a node never seen)."""
        if self.start_ms is None:
            raise ValueError("NodeSums.node_plan before reset: no grid yet")
        i = self.index.get(node_id)
        row = self.totals[i] if i is not None else np.zeros(self.width, dtype=np.int64)
        s = self.steps
        counts = row[2 * s:3 * s]
        return NodePlan(node_id, self.start_ms, self.interval_minutes, row[:s] / UNITS_PER_KW,
                        (row[:s] + row[s:2 * s]) / UNITS_PER_KW, int(row[3 * s] & LOW_MASK),
                        counts & LOW_MASK, counts >> HIGH, int(row[3 * s] >> HIGH))

    def signature(self, node_id: str) -> bytes:
        """The node's sums as bytes: equal exactly when its aggregate plan is the same."""
        i = self.index.get(node_id)
        return b"" if i is None else self.totals[i].tobytes()

    def _node(self, node_id: str) -> int:
        i = self.index.get(node_id)
        if i is None:
            i = self.index[node_id] = len(self.ids)
            self.ids.append(node_id)
            if i >= len(self.totals):
                grown = np.zeros((max(16, 2 * len(self.totals)), self.width), dtype=np.int64)
                grown[:len(self.totals)] = self.totals
                self.totals = grown
        return i


def _shape(plan: PackedPlan | None) -> tuple[int, int, int]:
    """(start, interval minutes, steps) of a packed plan; (0, 0, 0) for none."""
    return (0, 0, 0) if plan is None else (plan[2], plan[3], len(plan[4]) // 8)


def _stale(plan: PackedPlan | None, stale_before_ms: int) -> bool:
    """As :func:`siteplan.aggregate.aggregate` counts it: a plan from a forecast older than the bound,
    or of unknown age."""
    if plan is None:
        return False
    forecast = plan[5]
    return forecast is None or forecast < stale_before_ms
