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
``4 x steps + 2`` integers: planned power (online sites), estimated power
(every site with a plan), planned sites and carried sites per interval, then
the site itself (expected) and whether its plan is stale.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import sparse

from siteplan.aggregate import NodePlan, Plan, plan_matrix

#: Integer units of power in the sums: a nanowatt-scale kW fraction, far below any plan's resolution.
UNITS_PER_KW = 1_000_000_000
Rows = NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class Member:
    """What a member site adds to its nodes: its latest plan (if any), whether it is online, its nodes."""

    plan: Plan | None
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
        return 4 * self.steps + 2

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
            if held is not None and held[0].plan is not None and held[0].plan.plan_id == plan_id:
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
                if plan is not None and not stale and plan.forecast_issued_at_ms is not None:
                    heapq.heappush(self._turning,
                                   (plan.forecast_issued_at_ms + self.stale_after_ms, site, plan.plan_id))
        if not old and not new:
            return set()
        for node in {n for member, _ in new for n in member.nodes}:
            self._node(node)
        rows = np.vstack((self._rows(old), self._rows(new)))
        nodes = [self.index[n] for member, _ in old + new for n in member.nodes]
        columns = [k for k, (member, _) in enumerate(old + new) for _ in member.nodes]
        signs = [-1] * sum(len(m.nodes) for m, _ in old) + [1] * sum(len(m.nodes) for m, _ in new)
        touched, local = np.unique(np.array(nodes, dtype=np.int64), return_inverse=True)
        # Touched node x changed contribution, -1 taking back, +1 adding: the difference is one product.
        entries = (np.array(signs, dtype=np.int64), (local, np.array(columns, dtype=np.int64)))
        change = sparse.csr_matrix(entries, shape=(len(touched), len(rows)))
        self.totals[touched] += change @ rows
        return {self.ids[i] for i in touched}

    def node_plan(self, node_id: str) -> NodePlan:
        """The node's aggregate plan from its sums (all zero for a node never seen)."""
        if self.start_ms is None:
            raise ValueError("NodeSums.node_plan before reset: no grid yet")
        i = self.index.get(node_id)
        row = self.totals[i] if i is not None else np.zeros(self.width, dtype=np.int64)
        s = self.steps
        return NodePlan(node_id, self.start_ms, self.interval_minutes, row[:s] / UNITS_PER_KW,
                        row[s:2 * s] / UNITS_PER_KW, int(row[4 * s]), row[2 * s:3 * s].copy(),
                        row[3 * s:4 * s].copy(), int(row[4 * s + 1]))

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

    def _rows(self, members: Iterable[tuple[Member, bool]]) -> Rows:
        """Each member's contribution row (see the module docstring)."""
        listed = list(members)
        s = self.steps
        out = np.zeros((len(listed), self.width), dtype=np.int64)
        if not listed:
            return out
        assert self.start_ms is not None
        values = plan_matrix([m.plan for m, _ in listed], self.start_ms, s, self.interval_minutes)
        has = ~np.isnan(values)
        online = np.array([m.online for m, _ in listed], dtype=bool)[:, None]
        units = np.rint(np.where(has, values, 0.0) * UNITS_PER_KW).astype(np.int64)
        out[:, :s] = np.where(online, units, 0)
        out[:, s:2 * s] = units
        out[:, 2 * s:3 * s] = has & online
        out[:, 3 * s:4 * s] = has & ~online
        out[:, 4 * s] = 1
        out[:, 4 * s + 1] = [stale for _, stale in listed]
        return out


def _stale(plan: Plan | None, stale_before_ms: int) -> bool:
    """As :func:`siteplan.aggregate.aggregate` counts it: a plan from a forecast older than the bound,
    or of unknown age."""
    if plan is None:
        return False
    forecast = plan.forecast_issued_at_ms
    return forecast is None or forecast < stale_before_ms
