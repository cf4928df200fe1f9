"""The platform's answer to herding: a feeder-level price signal in the forecast it sends. Pure, no I/O.

Sites that all see the same prices all charge in the same cheap quarters and
can make a new feeder peak. The platform sees the aggregate of their plans;
where the feeder's net import goes over its limit it adds a congestion charge
to the price it sends the sites under that feeder for those intervals, and the
sites plan again (a subgradient step on the feeder constraint's price: every
site still plans only for its owner). :func:`coordinate` runs the rounds and
keeps the best plans that respect the limit. When no round does (identical
sites answer a price all alike, so they jump together), the platform sends
each site a cap instead, with the true prices: its idle import plus its share of the feeder's
headroom (:func:`import_caps`), which holds the limit by construction. The
owners' bills are reported at the true prices.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from siteplan.planner import Array, PlanInputs, owner_cost, plan_site


@dataclass(frozen=True)
class Coordinated:
    """Plans after the feeder signal: the owners' total bill at true prices, the feeder import, the signal."""

    cost: float
    feeder_import_kw: Array
    signal_per_mwh: Array
    rounds: int
    #: Most the feeder import exceeds the limit in any interval (0 when the limit holds), kW.
    overshoot_kw: float
    #: The owners' bill and the feeder import of the first, uncoordinated plans.
    uncoordinated_cost: float
    uncoordinated_import_kw: Array


def coordinate(sites: Sequence[PlanInputs], limit_kw: float, rounds: int = 12,
               step_per_mwh_per_kw: float | None = None, tolerance_kw: float = 1e-3) -> Coordinated:
    """Plan every site, then raise a congestion charge where the feeder's import passes ``limit_kw``."""
    steps = sites[0].steps
    alpha = step_per_mwh_per_kw if step_per_mwh_per_kw is not None else 400.0 / max(limit_kw, 1e-9)
    signal = np.zeros(steps)
    best: tuple[float, float, Array, Array] | None = None  # (overshoot, cost, import, signal)
    first: tuple[float, Array] | None = None
    done = 0
    for done in range(1, rounds + 1):
        grids = [plan_site(replace(s, prices_per_mwh=s.prices_per_mwh + signal)).grid_kw for s in sites]
        feeder = np.sum(grids, axis=0)
        cost = sum(owner_cost(g, s.prices_per_mwh, s.tariff, s.step_minutes)
                   for g, s in zip(grids, sites, strict=True))
        overshoot = max(0.0, float(np.max(feeder - limit_kw)))
        if first is None:
            first = (cost, feeder)
        candidate = (overshoot if overshoot > tolerance_kw else 0.0, cost, feeder, signal.copy())
        if best is None or candidate[:2] < best[:2]:
            best = candidate
        if overshoot <= tolerance_kw and done > 1:
            break
        signal = np.maximum(0.0, signal + alpha * (feeder - limit_kw))
    assert best is not None and first is not None
    if best[0] > tolerance_kw:  # the signal alone did not settle: send each site its share as a cap
        capped = [replace(s, import_cap_kw=cap)
                  for s, cap in zip(sites, import_caps(sites, limit_kw), strict=True)]
        grids = [plan_site(s).grid_kw for s in capped]
        feeder = np.sum(grids, axis=0)
        cost = sum(owner_cost(g, s.prices_per_mwh, s.tariff, s.step_minutes)
                   for g, s in zip(grids, sites, strict=True))
        best = (max(0.0, float(np.max(feeder - limit_kw))), cost, feeder, np.zeros(steps))
    return Coordinated(best[1], best[2], best[3], done, best[0], first[0], first[1])


def import_caps(sites: Sequence[PlanInputs], limit_kw: float) -> list[Array]:
    """Each site's import cap per step: what it imports idle, plus a share of the feeder's headroom.

    The shares (by battery capacity) of the headroom left when every site is idle sum to the
    limit, so the feeder holds whatever each site plans; idle stays feasible for every site.
    """
    idle = np.array([np.maximum(s.load_kw - s.solar_kw, 0.0) for s in sites])
    headroom = np.maximum(limit_kw - idle.sum(axis=0), 0.0)
    weights = np.array([s.battery.capacity_kwh for s in sites])
    weights = weights / weights.sum()
    return [idle[i] + weights[i] * headroom for i in range(len(sites))]
