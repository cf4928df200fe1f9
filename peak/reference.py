"""A brute-force threshold search: the reference the LP is checked against, independent of any solver.

For a candidate threshold ``T`` the greedy rule discharges exactly what the load
exceeds ``T`` by and recharges as much as the room under ``T``, the charge limit
and the free capacity allow. That rule keeps the stored energy as high as any
schedule holding ``T`` could at every step (it never spends more than it must
and never charges later than it could), so ``T`` is feasible exactly when the
greedy rule stays within the limits and ends with the energy asked. Feasibility
is monotone in ``T``, so bisection finds the lowest feasible threshold.
"""

from __future__ import annotations

import numpy as np

from peak.fleet import FleetCapacity
from peak.planner import Array


def feasible(load_kw: Array, threshold_kw: float, fleet: FleetCapacity, step_h: float,
             end_energy_kwh: float, tol: float = 1e-9) -> bool:
    """Whether the fleet can hold ``load_kw`` at or under ``threshold_kw`` all day (greedy rule)."""
    energy = fleet.energy_kwh
    for load in load_kw:
        if load > threshold_kw:
            need = load - threshold_kw
            if need > fleet.discharge_kw + tol:
                return False
            energy -= need * step_h / fleet.discharge_efficiency
            if energy < -tol:
                return False
        else:
            room = (fleet.capacity_kwh - energy) / (step_h * fleet.charge_efficiency)
            energy += min(fleet.charge_kw, threshold_kw - load, room) * step_h * fleet.charge_efficiency
    return energy >= end_energy_kwh - tol


def min_threshold(load_kw: Array, fleet: FleetCapacity, step_h: float, end_energy_kwh: float | None = None,
                  iterations: int = 60) -> float:
    """The lowest threshold the fleet can hold, by bisection on :func:`feasible`."""
    end = fleet.energy_kwh if end_energy_kwh is None else end_energy_kwh
    peak = float(np.max(load_kw))
    low, high = peak - fleet.discharge_kw - 1.0, peak + fleet.charge_kw + 1.0
    if not feasible(load_kw, high, fleet, step_h, end):
        raise ValueError("no threshold is feasible: the fleet cannot end the day with the energy asked")
    for _ in range(iterations):
        mid = (low + high) / 2
        if feasible(load_kw, mid, fleet, step_h, end):
            high = mid
        else:
            low = mid
    return high
