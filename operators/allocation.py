"""Split an aggregate setpoint across sites, like a query planner: pure, no I/O.

A dispatch asks a set of sites for ``target_kw`` (positive: discharge to the
grid; negative: charge) for ``horizon_h`` hours. Each site can give at most

* its power limit in that direction (``max_discharge_kw`` / ``max_charge_kw``),
* no more than keeps it above its backup reserve for the whole window
  (``energy_available_kwh / horizon_h`` when discharging) or below full
  (``headroom_kwh / horizon_h`` when charging),
* nothing at all if it is not eligible (offline, or excluded by the planner).

Two allocators share those limits:

* :func:`waterfill` (the fast path, closed form, vectorised): spreads the target
  in proportion to each site's energy in the direction asked (energy above
  reserve to discharge, headroom to charge), capping sites at their limits and
  pouring what they cannot take into the others.
* :func:`qp_allocate` (cvxpy with Clarabel): a quadratic programme for richer
  objectives: the same spread by energy, a penalty for approaching the reserve,
  and, when charging, a preference for sites with solar surplus.

An infeasible target never violates a limit: every site gives its limit and the
result states the exact shortfall.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.float64]

#: Below this many kW a site's share is treated as nothing (solver noise, not a command).
EPSILON_KW = 1e-9


@dataclass(frozen=True)
class Fleet:
    """The sites a dispatch may use, as parallel arrays (one entry per site)."""

    max_discharge_kw: Array
    max_charge_kw: Array
    energy_available_kwh: Array
    headroom_kwh: Array
    eligible: NDArray[np.bool_]
    solar_surplus_kw: Array | None = None

    def __post_init__(self) -> None:
        sizes = {len(self.max_discharge_kw), len(self.max_charge_kw), len(self.energy_available_kwh),
                 len(self.headroom_kwh), len(self.eligible)}
        if self.solar_surplus_kw is not None:
            sizes.add(len(self.solar_surplus_kw))
        if len(sizes) != 1:
            raise ValueError(f"fleet arrays differ in length: {sorted(sizes)}")

    def __len__(self) -> int:
        return len(self.eligible)

    def limits_kw(self, discharge: bool, horizon_h: float) -> Array:
        """What each site can give in one direction for the whole window (0 if not eligible)."""
        if horizon_h <= 0:
            raise ValueError(f"the horizon must be positive, not {horizon_h} h")
        power = self.max_discharge_kw if discharge else self.max_charge_kw
        energy = self.energy_available_kwh if discharge else self.headroom_kwh
        limits = np.minimum(np.maximum(power, 0.0), np.maximum(energy, 0.0) / horizon_h)
        return np.where(self.eligible, limits, 0.0)

    def weights(self, discharge: bool) -> Array:
        """How a target is spread: by energy above reserve (discharge) or headroom (charge)."""
        energy = self.energy_available_kwh if discharge else self.headroom_kwh
        return np.where(self.eligible, np.maximum(energy, 0.0), 0.0)


@dataclass(frozen=True)
class Allocation:
    """Per-site setpoints (signed like the target) and how much of the target they meet."""

    setpoints_kw: Array
    target_kw: float

    @property
    def achieved_kw(self) -> float:
        return float(self.setpoints_kw.sum())

    @property
    def shortfall_kw(self) -> float:
        """How much of the target no allocation within the limits can meet (0 when feasible)."""
        return max(0.0, abs(self.target_kw) - abs(self.achieved_kw))


def _at_limits(limits: Array, sign: float, target_kw: float) -> Allocation:
    return Allocation(sign * limits, target_kw)


def waterfill(fleet: Fleet, target_kw: float, horizon_h: float) -> Allocation:
    """Spread ``target_kw`` in proportion to energy, capped by each site's limit (closed form).

    Each site gets ``min(limit_i, level * weight_i)``; the level is found exactly from the
    sorted ratios ``limit_i / weight_i`` (the points at which sites fill up), in O(n log n).
    """
    discharge = target_kw >= 0
    sign = 1.0 if discharge else -1.0
    need = abs(target_kw)
    limits = fleet.limits_kw(discharge, horizon_h)
    weights = np.where(limits > 0, fleet.weights(discharge), 0.0)
    if need <= 0:
        return Allocation(np.zeros(len(fleet)), target_kw)
    if limits.sum() <= need:
        return _at_limits(limits, sign, target_kw)
    active = weights > 0
    ratios = np.full(len(fleet), np.inf)
    ratios[active] = limits[active] / weights[active]
    order = np.argsort(ratios)
    sorted_ratios, sorted_limits, sorted_weights = ratios[order], limits[order], weights[order]
    # With the first k sites (by ratio) at their limits, the rest take level * weight:
    #   given(k) = sum(limits[:k]) + level * sum(weights[k:]), and level lies in [ratio_{k-1}, ratio_k].
    filled = np.concatenate(([0.0], np.cumsum(sorted_limits)))
    remaining = np.concatenate((np.cumsum(sorted_weights[::-1])[::-1], [0.0]))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        levels = (need - filled) / remaining
    lower = np.concatenate(([0.0], sorted_ratios))
    upper = np.concatenate((sorted_ratios, [np.inf]))
    fits = (remaining > 0) & (levels >= lower - 1e-12) & (levels <= upper + 1e-12)
    level = float(levels[np.argmax(fits)])
    setpoints = np.minimum(limits, level * weights)
    return Allocation(sign * setpoints, target_kw)


def qp_allocate(fleet: Fleet, target_kw: float, horizon_h: float, reserve_penalty: float = 0.1,
                solar_preference: float = 0.05) -> Allocation:
    """The same limits with a richer objective, solved as a QP with Clarabel.

    Minimises ``sum(p^2 / w)`` (spread by energy ``w``), plus ``reserve_penalty`` times
    ``sum(p^2 / limit)`` (a site close to its limit, i.e. close to its reserve over the window,
    is used less), minus ``solar_preference`` times the power taken by sites with solar surplus
    when charging; subject to the limits and to meeting the target exactly.
    """
    discharge = target_kw >= 0
    sign = 1.0 if discharge else -1.0
    need = abs(target_kw)
    limits = fleet.limits_kw(discharge, horizon_h)
    if need <= 0:
        return Allocation(np.zeros(len(fleet)), target_kw)
    if limits.sum() <= need:
        return _at_limits(limits, sign, target_kw)
    usable = np.flatnonzero(limits > EPSILON_KW)
    if len(usable) == 0:  # only negligible limits: nothing worth a command, nothing to optimise
        return _at_limits(limits, sign, target_kw)
    # Imported here: cvxpy (with scipy) takes seconds to import, which every start of the control flow
    # paid before the water-filling fast path could run (a restart after a crash waited for it).
    import cvxpy as cp

    cap = limits[usable]
    weight = np.maximum(fleet.weights(discharge)[usable], 1e-6)
    p = cp.Variable(len(usable))
    objective = cp.sum(cp.multiply(1.0 / weight, cp.square(p)))
    objective += reserve_penalty * cp.sum(cp.multiply(1.0 / cap, cp.square(p)))
    if not discharge and fleet.solar_surplus_kw is not None:
        surplus = np.maximum(fleet.solar_surplus_kw[usable], 0.0)
        objective -= solar_preference * (surplus @ p)
    problem = cp.Problem(cp.Minimize(objective), [p >= 0, p <= cap, cp.sum(p) == need])
    problem.solve(solver=cp.CLARABEL)
    if p.value is None:
        raise RuntimeError(f"the allocation QP did not solve: {problem.status}")
    setpoints = np.zeros(len(fleet))
    # Clip solver noise back inside the limits, so no command ever exceeds what a site can do.
    setpoints[usable] = np.clip(np.asarray(p.value, dtype=np.float64), 0.0, cap)
    return Allocation(sign * setpoints, target_kw)
