"""Site plans aggregated through the hierarchies: what the fleet will do anyway. Pure, no I/O.

* :func:`check_plan` decides whether a plan may count: a known site, finite
  powers, within the site's charge/discharge limits, never below its reserve
  (replayed from the site's state of charge when known, otherwise its largest
  drawdown must fit in the energy above the reserve). A refused plan comes
  back with the reason, for the dead-letter topic.
* :class:`PlanBook` keeps the latest plan per site: a plan issued later
  replaces the one held, a replayed ``plan_id`` changes nothing, a plan
  issued earlier than the one held (late) is ignored.
* :func:`aggregate` sums the latest plans per node and interval through every
  hierarchy a site belongs to. Plans of online sites are the plan; plans of
  offline sites are carried forward into the estimate only (marked by the
  ``carried_sites`` count); ``coverage`` is the share of a node's expected
  sites whose current plan covers the interval. A plan made from a forecast
  older than ``stale_before_ms`` counts, and is counted as stale.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import sparse

from schemas.times import epoch_ms

Array = NDArray[np.float64]
MINUTE_MS = 60_000
#: Slack for float rounding when checking a plan against limits (kW, kWh).
TOLERANCE = 1e-6


@dataclass(frozen=True, slots=True)
class Plan:
    """One SitePlan as the aggregation holds it (times in epoch milliseconds)."""

    site_id: str
    plan_id: str
    issued_at_ms: int
    start_ms: int
    interval_minutes: int
    power_kw: tuple[float, ...]
    forecast_issued_at_ms: int | None = None

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Plan:
        """From a decoded SitePlan value (datetimes or epoch milliseconds)."""
        forecast = record.get("forecast_issued_at")
        return cls(str(record["site_id"]), str(record["plan_id"]), _ms(record["issued_at"]),
                   _ms(record["start"]), int(record["interval_minutes"]),
                   tuple(map(float, record["power_kw"])),
                   None if forecast is None else _ms(forecast))

    def value_at(self, t_ms: int) -> float | None:
        """Planned power in the interval that holds ``t_ms``, or None outside the plan."""
        index = (t_ms - self.start_ms) // (self.interval_minutes * MINUTE_MS)
        return self.power_kw[index] if 0 <= index < len(self.power_kw) else None


def _ms(value: datetime | int) -> int:
    return value if isinstance(value, int) else epoch_ms(value)


@dataclass(frozen=True, slots=True)
class SiteLimits:
    """What a site's twin says it can do (from its registered ancestry)."""

    capacity_kwh: float
    max_charge_kw: float
    max_discharge_kw: float
    reserve_pct: float
    round_trip_efficiency: float = 0.9


def check_plan(plan: Plan, limits: SiteLimits | None, soc_pct: float | None = None) -> str | None:
    """Why the plan may not count, or None when it may."""
    if limits is None:
        return f"plan for unknown site {plan.site_id}"
    if plan.interval_minutes <= 0 or not plan.power_kw:
        return f"plan {plan.plan_id} has no intervals ({len(plan.power_kw)} x {plan.interval_minutes} min)"
    p = np.asarray(plan.power_kw)
    if not np.isfinite(p).all():
        return f"plan {plan.plan_id} has a non-finite power"
    low, high = float(p.min()), float(p.max())
    if low < -limits.max_charge_kw - TOLERANCE or high > limits.max_discharge_kw + TOLERANCE:
        return (f"plan {plan.plan_id} power [{low:.3f}, {high:.3f}] kW beyond the site's limits "
                f"[-{limits.max_charge_kw}, {limits.max_discharge_kw}] kW")
    eta = math.sqrt(limits.round_trip_efficiency)
    dt_h = plan.interval_minutes / 60.0
    stored = np.concatenate(([0.0], np.cumsum(np.where(p < 0, -p * dt_h * eta, -p * dt_h / eta))))
    reserve_kwh = limits.reserve_pct / 100.0 * limits.capacity_kwh
    if soc_pct is not None:
        start = soc_pct / 100.0 * limits.capacity_kwh
        lowest = start + float(stored.min())
        if lowest < min(reserve_kwh, start) - TOLERANCE:
            return (f"plan {plan.plan_id} goes below the site's reserve ({lowest:.3f} kWh < "
                    f"{reserve_kwh:.3f} kWh)")
        return None
    drawdown = float(np.max(np.maximum.accumulate(stored) - stored))
    if drawdown > limits.capacity_kwh - reserve_kwh + TOLERANCE:
        return (f"plan {plan.plan_id} draws {drawdown:.3f} kWh, more than the "
                f"{limits.capacity_kwh - reserve_kwh:.3f} kWh above the site's reserve")
    return None


def check_plans(plans: Sequence[Plan], limits: Sequence[SiteLimits | None],
                soc_pct: Sequence[float | None]) -> list[str | None]:
    """:func:`check_plan` of many plans at once, the same answers (a property test holds them equal).

    Plans of one length and step with known limits and no SoC are checked as one matrix; a plan
    that fails there, or any other, gets :func:`check_plan`'s own verdict and reason.
    """
    reasons: list[str | None] = [None] * len(plans)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, (plan, site_limits, soc) in enumerate(zip(plans, limits, soc_pct, strict=True)):
        if site_limits is None or soc is not None or plan.interval_minutes <= 0 or not plan.power_kw:
            reasons[i] = check_plan(plan, site_limits, soc)
        else:
            groups.setdefault((len(plan.power_kw), plan.interval_minutes), []).append(i)
    for (_, minutes), rows in groups.items():
        p = np.array([plans[i].power_kw for i in rows])
        held = [limits[i] for i in rows]
        charge = np.array([lim.max_charge_kw for lim in held if lim is not None])
        discharge = np.array([lim.max_discharge_kw for lim in held if lim is not None])
        eta = np.sqrt(np.array([lim.round_trip_efficiency for lim in held if lim is not None]))[:, None]
        room = np.array([lim.capacity_kwh - lim.reserve_pct / 100.0 * lim.capacity_kwh
                         for lim in held if lim is not None])
        dt_h = minutes / 60.0
        with np.errstate(invalid="ignore"):
            within = (p.min(axis=1) >= -charge - TOLERANCE) & (p.max(axis=1) <= discharge + TOLERANCE)
            steps = np.where(p < 0, -p * dt_h * eta, -p * dt_h / eta)
            stored = np.concatenate((np.zeros((len(rows), 1)), np.cumsum(steps, axis=1)), axis=1)
            drawdown = np.max(np.maximum.accumulate(stored, axis=1) - stored, axis=1)
            fine = np.isfinite(p).all(axis=1) & within & (drawdown <= room + TOLERANCE)
        for i, ok in zip(rows, fine, strict=True):
            if not ok:
                reasons[i] = check_plan(plans[i], limits[i], None)
    return reasons


class PlanBook:
    """The latest plan per site; replays are idempotent and late plans never replace newer ones."""

    def __init__(self) -> None:
        self.plans: dict[str, Plan] = {}

    def offer(self, plan: Plan) -> str:
        """Take a plan; what happened to it: "new", "replaced", "replayed" or "late"."""
        held = self.plans.get(plan.site_id)
        if held is None:
            self.plans[plan.site_id] = plan
            return "new"
        if held.plan_id == plan.plan_id:
            return "replayed"
        if (plan.issued_at_ms, plan.plan_id) < (held.issued_at_ms, held.plan_id):
            return "late"
        self.plans[plan.site_id] = plan
        return "replaced"


@dataclass(frozen=True)
class NodePlan:
    """A node's aggregate plan over ``steps`` intervals from ``start_ms`` (arrays, one value per interval)."""

    node_id: str
    start_ms: int
    interval_minutes: int
    #: Sum of the plans of online sites (positive = discharge), kW.
    planned_kw: Array
    #: planned_kw plus the carried-forward plans of offline sites: the estimate, kW.
    estimate_kw: Array
    expected_sites: int
    #: Online sites whose plan covers the interval.
    planned_sites: NDArray[np.int64]
    #: Offline sites whose last plan covers the interval (carried forward, an estimate).
    carried_sites: NDArray[np.int64]
    #: Sites counted whose plan was made from a forecast older than the latest one.
    stale_sites: int

    @property
    def coverage(self) -> Array:
        """Share of expected sites with a current plan for each interval (carried plans do not count)."""
        return self.planned_sites / max(1, self.expected_sites)


def plan_matrix(plans: Sequence[Plan | None], start_ms: int, steps: int, interval_minutes: int) -> Array:
    """Each plan on a common grid of intervals (rows), NaN where a site has no plan for the interval."""
    out = np.full((len(plans), steps), np.nan)
    grid = start_ms + np.arange(steps, dtype=np.int64) * interval_minutes * MINUTE_MS
    # Plans made from one forecast share their start, step and length: place each such group at once.
    groups: dict[tuple[int, int, int], list[tuple[int, Plan]]] = {}
    for row, plan in enumerate(plans):
        if plan is not None:
            shape = (plan.start_ms, plan.interval_minutes, len(plan.power_kw))
            groups.setdefault(shape, []).append((row, plan))
    for (plan_start, minutes, length), members in groups.items():
        index = (grid - plan_start) // (minutes * MINUTE_MS)
        inside = (index >= 0) & (index < length)
        if not inside.any():
            continue
        rows = np.array([row for row, _ in members], dtype=np.int64)
        powers = np.array([plan.power_kw for _, plan in members])
        out[np.ix_(rows, np.flatnonzero(inside))] = powers[:, index[inside]]
    return out


def aggregate(book: PlanBook, ancestors: Mapping[str, Iterable[str]], online: Iterable[str],
              start_ms: int, steps: int, interval_minutes: int = 15,
              stale_before_ms: int | None = None) -> dict[str, NodePlan]:
    """Every node's aggregate plan from the latest plan of each member site.

    ``ancestors`` maps each current member site to all its ancestor nodes in every hierarchy
    (e.g. ``Ancestry.nodes_at``); sites not in it count nowhere, member sites without a plan
    count in ``expected_sites`` only.
    """
    site_ids = sorted(ancestors)
    site_index = {s: i for i, s in enumerate(site_ids)}
    up = set(online)
    plans = [book.plans.get(s) for s in site_ids]
    values = plan_matrix(plans, start_ms, steps, interval_minutes)
    has = ~np.isnan(values)
    is_online = np.array([s in up for s in site_ids], dtype=bool).reshape(-1, 1)
    stale = np.array([p is not None and stale_before_ms is not None and (
        p.forecast_issued_at_ms is None or p.forecast_issued_at_ms < stale_before_ms) for p in plans])
    filled = np.where(has, values, 0.0)
    planned = np.where(is_online, filled, 0.0)
    node_ids = sorted({n for s in site_ids for n in ancestors[s]})
    node_index = {n: i for i, n in enumerate(node_ids)}
    pairs = [(node_index[n], site_index[s]) for s in site_ids for n in set(ancestors[s])]
    nodes = np.array([p[0] for p in pairs], dtype=np.int64)
    sites = np.array([p[1] for p in pairs], dtype=np.int64)
    # Node x site membership as a sparse matrix: every sum below is one sparse product.
    members = sparse.csr_matrix((np.ones(len(pairs)), (nodes, sites)), shape=(len(node_ids), len(site_ids)))
    sums = {"planned": members @ planned, "estimate": members @ filled,
            "planned_n": members @ (has & is_online).astype(float),
            "carried_n": members @ (has & ~is_online).astype(float)}
    expected = np.bincount(nodes, minlength=len(node_ids))
    stale_n = members @ stale.astype(float)
    return {
        node: NodePlan(node, start_ms, interval_minutes, sums["planned"][i], sums["estimate"][i],
                       int(expected[i]), np.rint(sums["planned_n"][i]).astype(np.int64),
                       np.rint(sums["carried_n"][i]).astype(np.int64), round(float(stale_n[i])))
        for node, i in node_index.items()
    }
