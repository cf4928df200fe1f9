"""The day-ahead peak-shaving plan: a threshold and a discharge/recharge schedule, as an LP.

Given a node's load forecast per interval and what the fleet under it can give
(:mod:`peak.fleet`), choose the lowest threshold ``T`` the net load can be held
under for the whole day::

    minimise    T + w * sum(d + c) * dt
    subject to  load[t] - d[t] + c[t] <= T                      (no interval above T, recharge included)
                0 <= d[t] <= P_dis,  0 <= c[t] <= P_ch
                e[t+1] = e[t] - d[t] * dt / eta_dis + c[t] * dt * eta_ch,  e[0] = E0
                0 <= e[t] <= E_max                             (never below the reserves, never over full)
                e[n] >= E_end                                   (the day gives back what it took)

``e`` is the energy above the backup reserves. ``w`` is small enough that it
never moves ``T`` (one unit of ``T`` is worth more than all the energy it could
save) and only picks, among the schedules reaching the lowest ``T``, one without
pointless cycling. Recharge lives under the same ``T``, so the plan has no
snapback: it recharges only where the load leaves room below the threshold.

Uncertainty: the plan is made against the forecast's ``quantile`` (``mean + z *
std``): above the median, where the load may be higher, the plan keeps energy
for it and the threshold it states is one the fleet can hold if the load comes
in at that quantile, so a wider band means a higher, safer threshold. The
default is the median: in the SimBench year replay (``vpp bench peak``) every
quantile above it lowered the monthly reduction (mv_urban: 11.1% at the median,
10.9% at 0.6, 3.4% at 0.8 without the billing floor's help), because the
executor already follows the measured load and a high threshold gives up the
peak on the many days the forecast is right. Coverage and forecast quality
derate the fleet instead (:mod:`peak.fleet`).

The problem is compiled once per horizon (cvxpy Parameters, Clarabel) and
solved per day.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from statistics import NormalDist

import cvxpy as cp
import numpy as np
import numpy.typing as npt

from peak.fleet import FleetCapacity, committed

Array = npt.NDArray[np.float64]

#: Relative slack when checking a solved schedule against the reserves and the full state.
ENERGY_TOLERANCE = 1e-6


@dataclass(frozen=True, slots=True)
class LoadForecast:
    """A node's forecast load (kW) from ``start`` every ``step``: the mean and its standard deviation."""

    start: datetime
    step: timedelta
    mean_kw: Array
    std_kw: Array
    model: str = ""
    worse_than_naive: bool = False


@dataclass(frozen=True, slots=True)
class Plan:
    """A day's event: the threshold and the fleet's schedule (positive kW: discharge, charge)."""

    start: datetime
    step: timedelta
    threshold_kw: float
    forecast_peak_kw: float
    planning_load_kw: Array
    discharge_kw: Array
    charge_kw: Array
    energy_kwh: Array  # above the reserves, at each interval boundary (n + 1 values)
    fleet: FleetCapacity  # what the plan counted on, after derating
    solve_s: float
    notes: tuple[str, ...] = field(default=())

    @property
    def net_kw(self) -> Array:
        """The planned net load: planning load minus discharge plus recharge."""
        out: Array = self.planning_load_kw - self.discharge_kw + self.charge_kw
        return out

    @property
    def energy_delivered_kwh(self) -> float:
        """Energy the plan discharges to the grid."""
        return float(self.discharge_kw.sum() * self.step.total_seconds() / 3600)


@dataclass(frozen=True, slots=True)
class NoEvent:
    """No plan for the day, and why (a missing forecast, nothing to give, a reserve at risk)."""

    reason: str
    refused: bool = False  # True when a plan was found but broke a limit and was refused


class Planner:
    """The peak LP for ``intervals`` steps of ``step_h`` hours, compiled once and solved per day."""

    def __init__(self, intervals: int, step_h: float, quantile: float = 0.5) -> None:
        if intervals < 1 or step_h <= 0:
            raise ValueError("a plan needs at least one interval of positive length")
        self.intervals, self.step_h = intervals, step_h
        self.z = NormalDist().inv_cdf(quantile) if quantile != 0.5 else 0.0
        n, dt = intervals, step_h
        self._load = cp.Parameter(n)
        self._p_dis = cp.Parameter(nonneg=True)
        self._p_ch = cp.Parameter(nonneg=True)
        self._e0 = cp.Parameter(nonneg=True)
        self._e_max = cp.Parameter(nonneg=True)
        self._e_end = cp.Parameter(nonneg=True)
        self._inv_eta_dis = cp.Parameter(nonneg=True)
        self._eta_ch = cp.Parameter(nonneg=True)
        self._d = cp.Variable(n, nonneg=True)
        self._c = cp.Variable(n, nonneg=True)
        self._t = cp.Variable()
        energy = self._e0 + cp.cumsum(dt * (self._eta_ch * self._c - self._inv_eta_dis * self._d))
        self._energy = energy
        weight = 1e-4 / (n * dt)
        self._problem = cp.Problem(
            cp.Minimize(self._t + weight * dt * cp.sum(self._d + self._c)),
            [self._load - self._d + self._c <= self._t, self._d <= self._p_dis, self._c <= self._p_ch,
             energy >= 0, energy <= self._e_max, energy[n - 1] >= self._e_end],
        )

    def plan(self, forecast: LoadForecast | None, fleet: FleetCapacity,
             end_energy_kwh: float | None = None) -> Plan | NoEvent:
        """The day's plan, or why there is none.

        ``end_energy_kwh`` is the energy the fleet must hold at the end of the day
        (default: what it holds at the start after derating, so days repeat).
        """
        if forecast is None:
            return NoEvent("no load forecast for the day")
        mean = np.asarray(forecast.mean_kw, dtype=np.float64)
        std = np.asarray(forecast.std_kw, dtype=np.float64)
        if len(mean) != self.intervals or len(std) != self.intervals:
            return NoEvent(f"the forecast has {len(mean)} intervals, the plan needs {self.intervals}")
        if not (np.isfinite(mean).all() and np.isfinite(std).all()):
            return NoEvent("the load forecast has missing values")
        if fleet.energy_kwh < 0 or fleet.headroom_kwh < 0:
            return NoEvent(f"the fleet is below its reserves ({fleet.energy_kwh:.1f} kWh above them)",
                           refused=True)
        fleet = committed(fleet, forecast.worse_than_naive)
        notes = list(fleet.notes)
        if fleet.discharge_kw <= 0 or fleet.energy_kwh <= 0:
            return NoEvent("the fleet has no power or energy to give above its reserves")
        load: Array = mean + self.z * np.maximum(std, 0.0)
        e_end = fleet.energy_kwh if end_energy_kwh is None else min(end_energy_kwh, fleet.capacity_kwh)
        self._load.value = load
        self._p_dis.value, self._p_ch.value = fleet.discharge_kw, max(fleet.charge_kw, 0.0)
        self._e0.value, self._e_max.value = fleet.energy_kwh, fleet.capacity_kwh
        self._e_end.value = max(e_end, 0.0)
        self._inv_eta_dis.value, self._eta_ch.value = 1 / fleet.discharge_efficiency, fleet.charge_efficiency
        began = time.perf_counter()
        self._problem.solve(solver=cp.CLARABEL)  # type: ignore[no-untyped-call]
        solve_s = time.perf_counter() - began
        if self._t.value is None or self._d.value is None or self._c.value is None:
            return NoEvent(f"the peak LP did not solve: {self._problem.status}")
        d = np.clip(np.asarray(self._d.value, dtype=np.float64), 0.0, fleet.discharge_kw)
        c = np.clip(np.asarray(self._c.value, dtype=np.float64), 0.0, max(fleet.charge_kw, 0.0))
        energy = fleet.energy_kwh + np.concatenate(
            ([0.0], np.cumsum(self.step_h * (fleet.charge_efficiency * c - d / fleet.discharge_efficiency))))
        slack = ENERGY_TOLERANCE * max(fleet.capacity_kwh, 1.0)
        if energy.min() < -slack or energy.max() > fleet.capacity_kwh + slack:
            return NoEvent(f"the schedule would take the fleet to {energy.min():.3f} kWh above its reserves "
                           f"(capacity {fleet.capacity_kwh:.3f}): refused", refused=True)
        if self.z:
            notes.append(f"planned against the forecast's {NormalDist().cdf(self.z):.0%} quantile")
        return Plan(forecast.start, forecast.step, float(self._t.value), float(mean.max()), load, d, c,
                    energy, fleet, solve_s, tuple(notes))
