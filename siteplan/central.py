"""The central LP over a fleet: the reference the site planners are checked against. Pure, no I/O.

Every site's problem from :mod:`siteplan.planner`, stacked into one linear
programme (matrix variables, one row per site) whose objective is the sum of
the owners' bills. Without coupling the problem separates exactly, so its
optimum is the sum of the local optima: the reference check that planning at
the edge loses nothing. With a feeder limit (the fleet's net import in each
step at most ``feeder_limit_kw``) the sites are coupled and only a central
solver sees the constraint: the benchmark reports how far co-optimised plans
fall from this optimum.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cvxpy as cp
import numpy as np
from numpy.typing import NDArray

from siteplan.planner import NO_CAP_KW, Array, PlanInputs, solved

#: HiGHS (simplex) for the large reference LP: faster than interior point at this size, and the
#: reference runs in tests and benchmarks only, where its one-line banner on stdout does no harm.
CENTRAL_SOLVER = "HIGHS"


@dataclass(frozen=True)
class FleetOptimum:
    """The central optimum: the fleet's total bill, each site's battery and grid power (sites x steps)."""

    cost: float
    power_kw: Array
    grid_kw: Array


def plan_fleet(sites: Sequence[PlanInputs], feeder_limit_kw: Array | float | None = None) -> FleetOptimum:
    """Solve every site's problem as one LP, optionally coupled by a limit on the fleet's net import."""
    if not sites:
        raise ValueError("no sites to plan")
    steps, step_minutes = sites[0].steps, sites[0].step_minutes
    if any(s.steps != steps or s.step_minutes != step_minutes for s in sites):
        raise ValueError("every site must be planned over the same steps")
    n, dt_h = len(sites), sites[0].dt_h

    def col(values: Sequence[float]) -> Array:
        return np.asarray(values, dtype=float).reshape(n, 1)

    def rows(values: Sequence[NDArray[Any]]) -> Array:
        return np.vstack([np.asarray(v, dtype=float) for v in values])

    batteries = [s.battery for s in sites]
    eta = col([b.eta for b in batteries])
    start = col([b.energy_kwh for b in batteries])
    capacity = col([b.capacity_kwh for b in batteries])
    holds = rows([np.zeros(steps + 1) if s.hold_kwh is None else s.hold_kwh for s in sites])
    floor = np.maximum(col([b.floor_kwh for b in batteries]), holds)
    end = np.maximum(col([b.energy_kwh if s.end_soc_pct is None else s.end_soc_pct / 100.0 * b.capacity_kwh
                          for s, b in zip(sites, batteries, strict=True)]), holds[:, steps:])
    may = rows([np.ones(steps) if s.may_discharge is None else s.may_discharge for s in sites])
    max_discharge = col([b.max_discharge_kw for b in batteries]) * may
    import_cost = rows([s.tariff.import_prices(s.prices_per_mwh) for s in sites]) * dt_h / 1000.0
    export_credit = rows([s.tariff.export_prices(s.prices_per_mwh) for s in sites]) * dt_h / 1000.0
    net_load = rows([s.load_kw - s.solar_kw for s in sites])

    charge = cp.Variable((n, steps), nonneg=True)
    discharge = cp.Variable((n, steps), nonneg=True)
    grid_in = cp.Variable((n, steps), nonneg=True)
    grid_out = cp.Variable((n, steps), nonneg=True)
    energy = cp.Variable((n, steps + 1))
    constraints = [
        energy[:, :1] == start,
        energy[:, 1:] == energy[:, :-1] + cp.multiply(eta * dt_h, charge)
        - cp.multiply(dt_h / eta, discharge),
        energy >= floor,
        energy <= capacity @ np.ones((1, steps + 1)),
        energy[:, steps:] >= end,
        charge <= col([b.max_charge_kw for b in batteries]) @ np.ones((1, steps)),
        discharge <= max_discharge,
        grid_in <= rows([np.full(steps, NO_CAP_KW) if s.import_cap_kw is None else s.import_cap_kw
                         for s in sites]),
        grid_in - grid_out == net_load + charge - discharge,
    ]
    if feeder_limit_kw is not None:
        limit = np.broadcast_to(np.asarray(feeder_limit_kw, dtype=float), (steps,))
        constraints.append(cp.sum(grid_in - grid_out, axis=0) <= limit)
    objective = cp.Minimize(cp.sum(cp.multiply(import_cost, grid_in))
                            - cp.sum(cp.multiply(export_credit, grid_out)))
    problem = cp.Problem(objective, constraints)
    problem.solve(solver=CENTRAL_SOLVER)
    if problem.status != cp.OPTIMAL:
        raise ValueError(f"no fleet plan: the problem is {problem.status}")
    return FleetOptimum(float(problem.value), solved(discharge) - solved(charge),
                        solved(grid_in) - solved(grid_out))
