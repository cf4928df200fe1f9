"""The site planner: a day of battery power at 15-minute steps that minimises the owner's bill. Pure, no I/O.

A device (in our world the simulator; a real integration could import this
module) receives a price forecast for its region and plans its battery for
its owner, not for the platform:

* **Tariff.** The owner pays ``price + network_per_mwh`` for every MWh taken
  from the grid and is credited ``price - export_fee_per_mwh`` for every MWh
  sent to it (:class:`Tariff`). Importing always costs more than exporting
  earns (the two margins must sum to more than zero), so an optimal plan
  never imports and exports in the same step: own solar covers the house and
  the battery first, and only the rest is sold.
* **Limits.** Charge and discharge stay within the inverter's kW limits; the
  stored energy stays between the backup reserve and full (a battery that
  starts below its reserve may not go lower than it started). Charging
  ``P`` kW for ``dt`` stores ``P*dt*eta`` kWh and discharging ``P`` kW draws
  ``P*dt/eta`` (``eta`` = sqrt of the round-trip efficiency), as in the
  simulator's physics.
* **The day is energy-neutral.** The plan ends with at least the energy it
  started with (or ``end_soc_pct``), so no plan sells tomorrow's reserve
  today; rolling re-planning on every forecast carries the rest.
* **Storm watch.** From the grid point at or before the watch begins until
  it lapses, the battery is full and does not discharge. When the watch
  begins sooner than the battery can fill at its charge limit, it is as full
  as charging flat out from now can make it at every point until then.

The problem is a linear programme, built once as a parametrised cvxpy
problem (DPP, so cvxpy compiles it once per horizon length) and solved per
site with Clarabel. Doing nothing (battery idle) is always feasible without a
storm watch, so an optimal plan never costs the owner more than it.

Sign convention as in SiteTelemetry: battery power positive = discharging;
grid power positive = importing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache

import cvxpy as cp
import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.float64]

STEP_MINUTES = 15
HORIZON_STEPS = 96
#: An interior-point solver that writes nothing (HiGHS, as fast here, prints a banner to stdout once
#: per process whatever its options say, and the planner runs inside devices and the simulator).
SOLVER = "CLARABEL"
#: Tighter than Clarabel's 1e-8 gap defaults, so a fleet's sum of plans stays within 1e-6 of the
#: central optimum even over thousands of sites (costs about a millisecond per plan).
SOLVER_OPTIONS: dict[str, float] = {"tol_gap_abs": 1e-10, "tol_gap_rel": 1e-10}
#: Import cap standing for "none": far beyond any home's connection.
NO_CAP_KW = 1e6


@dataclass(frozen=True)
class Tariff:
    """What the owner pays per MWh: the forecast price plus network charges on import, less a fee on export.
    """

    network_per_mwh: float = 90.0
    export_fee_per_mwh: float = 20.0

    def __post_init__(self) -> None:
        if not self.network_per_mwh + self.export_fee_per_mwh > 0:
            raise ValueError("importing must cost more than exporting earns "
                             f"(network {self.network_per_mwh} + export fee {self.export_fee_per_mwh} <= 0)")

    def import_prices(self, prices_per_mwh: Array) -> Array:
        """Price per MWh taken from the grid in each step."""
        return prices_per_mwh + self.network_per_mwh

    def export_prices(self, prices_per_mwh: Array) -> Array:
        """Credit per MWh sent to the grid in each step."""
        return prices_per_mwh - self.export_fee_per_mwh


@dataclass(frozen=True)
class Battery:
    """A home battery as the planner sees it; ``soc_pct`` is the state of charge at the plan's start."""

    capacity_kwh: float
    max_charge_kw: float
    max_discharge_kw: float
    reserve_pct: float
    soc_pct: float
    round_trip_efficiency: float = 0.9

    def __post_init__(self) -> None:
        values = (self.capacity_kwh, self.max_charge_kw, self.max_discharge_kw, self.reserve_pct,
                  self.soc_pct, self.round_trip_efficiency)
        if not all(math.isfinite(v) for v in values):
            raise ValueError(f"battery values must be finite: {values}")
        if self.capacity_kwh <= 0 or self.max_charge_kw < 0 or self.max_discharge_kw < 0:
            raise ValueError("capacity must be positive and power limits not negative")
        if not 0 <= self.reserve_pct <= 100 or not 0 <= self.soc_pct <= 100:
            raise ValueError("reserve and state of charge are percentages in [0, 100]")
        if not 0 < self.round_trip_efficiency <= 1:
            raise ValueError("round-trip efficiency must be in (0, 1]")

    @property
    def eta(self) -> float:
        """One-way efficiency: losses split evenly between charging and discharging."""
        return math.sqrt(self.round_trip_efficiency)

    @property
    def energy_kwh(self) -> float:
        """Stored energy at the start."""
        return self.soc_pct / 100.0 * self.capacity_kwh

    @property
    def floor_kwh(self) -> float:
        """Lowest stored energy a plan may reach: the reserve, or the start if it is already below."""
        return min(self.reserve_pct / 100.0 * self.capacity_kwh, self.energy_kwh)


@dataclass(frozen=True)
class StormWatch:
    """A storm watch over [starts, until): the battery is full when it begins and holds until it lapses."""

    starts: datetime
    until: datetime


@dataclass(frozen=True)
class PlanInputs:
    """One site's planning problem: prices and the house's own forecast, one value per step."""

    battery: Battery
    prices_per_mwh: Array
    load_kw: Array
    solar_kw: Array
    tariff: Tariff = Tariff()
    #: Per step (T+1 grid points): the stored energy must be at least this (storm watch); NaN-free.
    hold_kwh: Array | None = None
    #: Per step (T): discharge allowed (False while a storm watch holds).
    may_discharge: NDArray[np.bool_] | None = None
    end_soc_pct: float | None = None
    step_minutes: int = STEP_MINUTES
    #: Per step: most the site may import (a feeder cap the platform sends); None = no cap.
    import_cap_kw: Array | None = None

    def __post_init__(self) -> None:
        steps = len(self.prices_per_mwh)
        if steps == 0 or len(self.load_kw) != steps or len(self.solar_kw) != steps:
            raise ValueError(f"prices, load and solar need one value per step "
                             f"({len(self.prices_per_mwh)}, {len(self.load_kw)}, {len(self.solar_kw)})")
        for name in ("prices_per_mwh", "load_kw", "solar_kw"):
            if not np.all(np.isfinite(getattr(self, name))):
                raise ValueError(f"{name} must be finite")
        if np.any(self.load_kw < 0) or np.any(self.solar_kw < 0):
            raise ValueError("load and solar are not negative")

    @property
    def steps(self) -> int:
        return len(self.prices_per_mwh)

    @property
    def dt_h(self) -> float:
        return self.step_minutes / 60.0


@dataclass(frozen=True)
class SitePlanResult:
    """A plan: battery power (positive = discharge), its charge/discharge parts, stored energy, grid, cost."""

    power_kw: Array
    charge_kw: Array
    discharge_kw: Array
    #: Stored energy at each grid point (T+1 values, the first is the start).
    energy_kwh: Array
    grid_kw: Array
    cost: float


def storm_hold(battery: Battery, start: datetime, steps: int, watch: StormWatch | None,
               step_minutes: int = STEP_MINUTES) -> tuple[Array, NDArray[np.bool_]]:
    """The stored-energy floor per grid point and where discharge is allowed, for a storm watch.

    Full from the grid point at or before the watch begins through the one at or after it
    lapses; never more than charging flat out from the start can reach.
    """
    hold = np.zeros(steps + 1)
    may_discharge = np.ones(steps, dtype=bool)
    if watch is None or watch.until <= start:
        return hold, may_discharge
    dt = timedelta(minutes=step_minutes)
    first = max(0, math.floor((watch.starts - start) / dt))
    last = min(steps, math.ceil((watch.until - start) / dt))
    if first > steps:
        return hold, may_discharge
    dt_h = step_minutes / 60.0
    reachable = battery.energy_kwh + battery.eta * battery.max_charge_kw * dt_h * np.arange(steps + 1)
    full = np.minimum(battery.capacity_kwh, reachable)
    hold[first:last + 1] = full[first:last + 1]
    may_discharge[first:last] = False
    return hold, may_discharge


class _Program:
    """The parametrised LP for one horizon length, compiled by cvxpy on its first solve."""

    def __init__(self, steps: int) -> None:
        t = steps
        self.charge = cp.Variable(t, nonneg=True)
        self.discharge = cp.Variable(t, nonneg=True)
        self.grid_in = cp.Variable(t, nonneg=True)
        self.grid_out = cp.Variable(t, nonneg=True)
        self.energy = cp.Variable(t + 1)
        self.import_cost = cp.Parameter(t)  # currency per kW over one step: price * dt / 1000
        self.export_credit = cp.Parameter(t)
        self.net_load = cp.Parameter(t)
        self.charge_gain = cp.Parameter(nonneg=True)  # kWh stored per kW over one step: eta * dt
        self.discharge_draw = cp.Parameter(nonneg=True)  # kWh drawn per kW over one step: dt / eta
        self.start = cp.Parameter()
        self.floor = cp.Parameter(t + 1)
        self.capacity = cp.Parameter()
        self.end = cp.Parameter()
        self.max_charge = cp.Parameter(nonneg=True)
        self.max_discharge = cp.Parameter(t, nonneg=True)
        self.import_cap = cp.Parameter(t, nonneg=True)
        constraints = [
            self.energy[0] == self.start,
            self.energy[1:] == self.energy[:-1] + self.charge_gain * self.charge
            - self.discharge_draw * self.discharge,
            self.energy >= self.floor,
            self.energy <= self.capacity,
            self.energy[t] >= self.end,
            self.charge <= self.max_charge,
            self.discharge <= self.max_discharge,
            self.grid_in <= self.import_cap,
            self.grid_in - self.grid_out == self.net_load + self.charge - self.discharge,
        ]
        objective = cp.Minimize(self.import_cost @ self.grid_in - self.export_credit @ self.grid_out)
        self.problem = cp.Problem(objective, constraints)

    def solve(self, inputs: PlanInputs) -> SitePlanResult:
        b, t, dt_h = inputs.battery, inputs.steps, inputs.dt_h
        prices = np.asarray(inputs.prices_per_mwh, dtype=float)
        self.import_cost.value = inputs.tariff.import_prices(prices) * dt_h / 1000.0
        self.export_credit.value = inputs.tariff.export_prices(prices) * dt_h / 1000.0
        self.net_load.value = np.asarray(inputs.load_kw - inputs.solar_kw, dtype=float)
        self.charge_gain.value = b.eta * dt_h
        self.discharge_draw.value = dt_h / b.eta
        self.start.value = b.energy_kwh
        hold = np.zeros(t + 1) if inputs.hold_kwh is None else inputs.hold_kwh
        self.floor.value = np.maximum(b.floor_kwh, hold)
        self.capacity.value = b.capacity_kwh
        end = b.energy_kwh if inputs.end_soc_pct is None else inputs.end_soc_pct / 100.0 * b.capacity_kwh
        self.end.value = max(end, float(hold[t]))
        self.max_charge.value = b.max_charge_kw
        may = np.ones(t, dtype=bool) if inputs.may_discharge is None else inputs.may_discharge
        self.max_discharge.value = np.where(may, b.max_discharge_kw, 0.0)
        cap = inputs.import_cap_kw
        self.import_cap.value = np.full(t, NO_CAP_KW) if cap is None else cap
        self.problem.solve(solver=SOLVER, **SOLVER_OPTIONS)
        if self.problem.status != cp.OPTIMAL:
            raise ValueError(f"no plan: the problem is {self.problem.status}")
        charge = np.maximum(solved(self.charge), 0.0)
        discharge = np.maximum(solved(self.discharge), 0.0)
        grid = solved(self.grid_in) - solved(self.grid_out)
        return SitePlanResult(discharge - charge, charge, discharge, solved(self.energy), grid,
                              float(self.problem.value))


def solved(variable: cp.Variable) -> Array:
    """A solved variable's values as a float array."""
    return np.asarray(variable.value, dtype=np.float64)


@lru_cache(maxsize=8)
def _program(steps: int) -> _Program:
    return _Program(steps)


def plan_site(inputs: PlanInputs) -> SitePlanResult:
    """The owner's cheapest plan under the tariff and forecast, within every limit (raises if impossible)."""
    return _program(inputs.steps).solve(inputs)


def owner_cost(grid_kw: Array, prices_per_mwh: Array, tariff: Tariff,
               step_minutes: int = STEP_MINUTES) -> float:
    """What a grid power profile costs the owner: imports at the import price, exports at the credit."""
    dt_h = step_minutes / 60.0
    imports, exports = np.maximum(grid_kw, 0.0), np.maximum(-grid_kw, 0.0)
    return float((tariff.import_prices(prices_per_mwh) @ imports
                  - tariff.export_prices(prices_per_mwh) @ exports) * dt_h / 1000.0)


def idle_cost(inputs: PlanInputs) -> float:
    """What the owner pays with the battery idle all day: the baseline a plan must not exceed."""
    return owner_cost(inputs.load_kw - inputs.solar_kw, inputs.prices_per_mwh, inputs.tariff,
                      inputs.step_minutes)


def replay_energy(power_kw: Sequence[float] | Array, start_kwh: float, eta: float,
                  step_minutes: int = STEP_MINUTES) -> Array:
    """Stored energy at each grid point when a device runs ``power_kw`` (net) from ``start_kwh``."""
    p = np.asarray(power_kw, dtype=float)
    dt_h = step_minutes / 60.0
    delta = np.where(p < 0, -p * dt_h * eta, -p * dt_h / eta)
    return np.concatenate(([start_kwh], start_kwh + np.cumsum(delta)))
