"""The bid optimiser: energy and reserve quantities per interval for a battery (or a VPP node's aggregate).

A linear programme over ``n`` intervals of ``step_h`` hours, compiled once per (n, step) with
cvxpy Parameters (prices, state of charge, power and energy limits, efficiencies, costs) and
solved by Clarabel, so a re-solve costs only the numbers:

    maximise   sum_t step_h * (energy_t * (d_t - c_t) + reserve_t * r_t - degradation * (c_t + d_t))
               + terminal_value * soc_n
    subject to soc_{t+1} = soc_t + step_h * (eta_c * c_t - d_t / eta_d),  soc_0 given
               soc_min + sustain_h * r_t <= soc_{t+1} <= energy - sustain_h * r_t   (and at soc_t)
               d_t - c_t + r_t <= power,  c_t - d_t + r_t <= charge_power   (symmetric reserve headroom)
               0 <= c_t <= charge_power,  0 <= d_t <= power,  0 <= r_t <= reserve_max,  soc_n >= soc_end_min

``c``/``d`` are charge/discharge (MW), ``r`` symmetric reserve capacity (MW) that must be
sustainable for ``sustain_h`` hours either way; efficiencies split the round trip evenly
(eta_c = eta_d = sqrt(round trip)); a battery charges as fast as it discharges unless
``charge_mw`` says otherwise (a VPP node's aggregate can absorb more or less than it can
give). Prices are the forecast means; their uncertainty shapes
the bid bands (:mod:`bidding.bids`), not the schedule. The dual of the state-of-charge
balance is the marginal value of stored energy (the "water value"), which turns the schedule
into price-responsive bands.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

import cvxpy as cp
import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Battery:
    """What the asset can do now: a single battery, or a node's aggregate availability."""

    power_mw: float
    energy_mwh: float
    round_trip: float = 0.9
    soc_min_mwh: float = 0.0
    degradation_eur_per_mwh: float = 0.0
    reserve_sustain_h: float = 0.25
    #: Charge power limit (MW); ``None``: the same as ``power_mw``.
    charge_mw: float | None = None

    @property
    def charge_limit_mw(self) -> float:
        """How fast the asset can charge (MW)."""
        return self.power_mw if self.charge_mw is None else self.charge_mw

    @property
    def eta(self) -> float:
        """One-way efficiency (charge and discharge alike)."""
        return math.sqrt(self.round_trip)


@dataclass(frozen=True, slots=True)
class Plan:
    """The optimal schedule: MW per interval, state of charge at interval edges (n + 1), water values."""

    charge_mw: Array
    discharge_mw: Array
    reserve_mw: Array
    soc_mwh: Array
    water_value: Array
    """Marginal value (EUR/MWh) of one more MWh stored at the end of each interval."""
    value_eur: float


@dataclass(frozen=True, slots=True)
class _Compiled:
    problem: cp.Problem
    params: dict[str, cp.Parameter]
    charge: cp.Variable
    discharge: cp.Variable
    reserve: cp.Variable
    soc: cp.Variable
    balance: cp.Constraint


@cache
def _compile(n: int, step_h: float, baseline: bool = False) -> _Compiled:
    """The LP for ``n`` intervals; with ``baseline``, degradation is paid on the deviation from a schedule.

    A VPP node's fleet follows its own plan (the baseline) whatever the market does; what the node
    sells is the deviation from it, so only the deviation costs extra cycling: the degradation term
    becomes ``degradation * |d_t - c_t - baseline_t|`` (``up - down`` = the deviation, both >= 0).
    Without a deviation to earn from, the optimum then keeps the baseline. A single battery has no
    baseline and keeps the original problem (degradation on every MWh through it).
    """
    p = {
        "energy": cp.Parameter(n), "reserve": cp.Parameter(n), "soc0": cp.Parameter(),
        "power": cp.Parameter(nonneg=True), "charge_power": cp.Parameter(nonneg=True),
        "capacity": cp.Parameter(nonneg=True),
        "soc_min": cp.Parameter(nonneg=True), "eta_c": cp.Parameter(nonneg=True),
        "inv_eta_d": cp.Parameter(nonneg=True), "degradation": cp.Parameter(nonneg=True),
        "sustain": cp.Parameter(nonneg=True), "reserve_max": cp.Parameter(nonneg=True),
        "soc_end_min": cp.Parameter(nonneg=True), "terminal_value": cp.Parameter(),
    }
    c, d, r = cp.Variable(n, nonneg=True), cp.Variable(n, nonneg=True), cp.Variable(n, nonneg=True)
    soc = cp.Variable(n + 1)
    balance = soc[1:] == soc[:-1] + step_h * (p["eta_c"] * c - p["inv_eta_d"] * d)
    held = p["sustain"] * r
    constraints = [
        soc[0] == p["soc0"], balance,
        soc[1:] >= p["soc_min"] + held, soc[1:] <= p["capacity"] - held,
        soc[:-1] >= p["soc_min"] + held, soc[:-1] <= p["capacity"] - held,
        d - c + r <= p["power"], c - d + r <= p["charge_power"], c <= p["charge_power"], d <= p["power"],
        r <= p["reserve_max"], soc[n] >= p["soc_end_min"],
    ]
    if baseline:
        p["baseline"] = cp.Parameter(n)
        up, down = cp.Variable(n, nonneg=True), cp.Variable(n, nonneg=True)
        constraints.append(up - down == d - c - p["baseline"])
        cycling = cp.sum(up + down)
    else:
        cycling = cp.sum(c + d)
    revenue = step_h * (p["energy"] @ (d - c) + p["reserve"] @ r - p["degradation"] * cycling)
    problem = cp.Problem(cp.Maximize(revenue + p["terminal_value"] * soc[n]), constraints)
    if not problem.is_dpp():
        raise AssertionError("the bid LP must be DPP so it compiles once")
    return _Compiled(problem, p, c, d, r, soc, balance)


class InfeasiblePlanError(ValueError):
    """No schedule meets the limits (for example a terminal state of charge out of reach)."""


def optimise(battery: Battery, energy_price: Array, step_h: float, soc0_mwh: float, *,
             reserve_price: Array | None = None, soc_end_min_mwh: float = 0.0,
             terminal_value: float = 0.0, baseline_mw: Array | None = None) -> Plan:
    """The revenue-maximising schedule; ``reserve_price`` (EUR/MW/h) ``None`` means no reserve product.

    ``baseline_mw`` (net MW per interval, + discharge) is what the asset does anyway (a VPP node's
    aggregate plan): the schedule stays a total, but degradation is paid only on its deviation from it.
    """
    n = len(energy_price)
    compiled = _compile(n, step_h, baseline_mw is not None)
    values: dict[str, object] = {
        "energy": np.asarray(energy_price, dtype=np.float64),
        "reserve": np.zeros(n) if reserve_price is None else np.asarray(reserve_price, dtype=np.float64),
        "soc0": soc0_mwh, "power": battery.power_mw, "charge_power": battery.charge_limit_mw,
        "capacity": battery.energy_mwh,
        "soc_min": battery.soc_min_mwh, "eta_c": battery.eta, "inv_eta_d": 1.0 / battery.eta,
        "degradation": battery.degradation_eur_per_mwh, "sustain": battery.reserve_sustain_h,
        "reserve_max": 0.0 if reserve_price is None else battery.power_mw,
        "soc_end_min": soc_end_min_mwh, "terminal_value": terminal_value,
    }
    if baseline_mw is not None:
        values["baseline"] = np.asarray(baseline_mw, dtype=np.float64)
    for name, value in values.items():
        compiled.params[name].value = value
    compiled.problem.solve(solver=cp.CLARABEL)
    if compiled.problem.status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE):
        raise InfeasiblePlanError(f"bid LP is {compiled.problem.status}")

    def clean(x: cp.Variable) -> Array:
        return np.maximum(np.asarray(x.value, dtype=np.float64), 0.0)

    dual = np.asarray(compiled.balance.dual_value, dtype=np.float64)
    return Plan(clean(compiled.charge), clean(compiled.discharge), clean(compiled.reserve),
                np.asarray(compiled.soc.value, dtype=np.float64), dual / step_h,
                float(compiled.problem.value))
