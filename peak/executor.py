"""What the fleet does during the day: follow the measured load and the planned threshold.

The executor does not replay the plan's schedule blindly: the load comes in as it
comes. Each interval it discharges what the measured load exceeds the threshold
by, within the fleet's power and the energy above the reserves, and recharges
only into the room below ``min(threshold, highest load measured so far today)``.
That cap is what makes a rebound impossible by construction: the net load never
goes above a load the day has already seen without the fleet, so the day's peak
with the VPP never exceeds the day's peak without it.

:func:`fixed_window` is the baseline the issue measured: discharge at full power
across a fixed window and recharge at full power as soon as it ends.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from peak.fleet import FleetCapacity
from peak.planner import Array


@dataclass(frozen=True, slots=True)
class DayRun:
    """A day executed against the actual load: net load, battery power (+ discharge) and energy."""

    load_kw: Array
    battery_kw: Array
    energy_kwh: Array  # above the reserves, at each interval boundary (n + 1 values)

    @property
    def net_kw(self) -> Array:
        """Net load the node sees: load minus battery discharge."""
        out: Array = self.load_kw - self.battery_kw
        return out

    @property
    def rebound(self) -> bool:
        """The day's peak with the fleet is above the day's peak without it."""
        return bool(self.net_kw.max() > self.load_kw.max() * (1 + 1e-9))


def threshold_step(load_kw: float, threshold_kw: float | None, fleet: FleetCapacity, step_h: float,
                   energy_kwh: float, seen_kw: float) -> tuple[float, float]:
    """One interval of the rule: the fleet's power (+ discharge) and the energy left after it.

    Discharge what ``load_kw`` exceeds ``threshold_kw`` by, within the fleet's power and the
    energy above the reserves; otherwise recharge into the room under ``min(threshold,
    seen_kw)``, where ``seen_kw`` is the highest load of the day so far (this one included).
    :func:`follow_threshold` runs a day of it; the intraday executor (:mod:`peak.intraday`)
    runs it interval by interval on the measured load.
    """
    if threshold_kw is not None and load_kw > threshold_kw:
        deliverable = max(energy_kwh, 0.0) * fleet.discharge_efficiency / step_h
        p = min(fleet.discharge_kw, load_kw - threshold_kw, deliverable)
        return p, energy_kwh - p * step_h / fleet.discharge_efficiency
    cap = seen_kw if threshold_kw is None else min(threshold_kw, seen_kw)
    room = (fleet.capacity_kwh - energy_kwh) / (step_h * fleet.charge_efficiency)
    p = max(0.0, min(fleet.charge_kw, cap - load_kw, room))
    return -p, energy_kwh + p * step_h * fleet.charge_efficiency


def follow_threshold(load_kw: Array, threshold_kw: float | None, fleet: FleetCapacity, step_h: float,
                     start_energy_kwh: float, floor_kw: float = -np.inf) -> DayRun:
    """Run a day on the measured ``load_kw``; ``threshold_kw`` None (no event) only recharges.

    ``floor_kw`` is the billing period's net peak so far: discharging below it lowers no
    bill, so the executor holds ``max(threshold, floor)`` and keeps the energy for later.
    """
    if threshold_kw is not None:
        threshold_kw = max(threshold_kw, floor_kw)
    n = len(load_kw)
    battery = np.zeros(n)
    energy = np.empty(n + 1)
    energy[0] = e = start_energy_kwh
    seen = -np.inf
    for t, load in enumerate(load_kw):
        seen = max(seen, float(load))
        battery[t], e = threshold_step(float(load), threshold_kw, fleet, step_h, e, seen)
        energy[t + 1] = e
    return DayRun(np.asarray(load_kw, dtype=np.float64), battery, energy)


def fixed_window(load_kw: Array, window: tuple[int, int], fleet: FleetCapacity, step_h: float,
                 start_energy_kwh: float) -> DayRun:
    """Discharge at full power over intervals ``window[0]..window[1]-1``, then recharge at full power."""
    n = len(load_kw)
    battery = np.zeros(n)
    energy = np.empty(n + 1)
    energy[0] = e = start_energy_kwh
    for t in range(n):
        if window[0] <= t < window[1]:
            p = min(fleet.discharge_kw, max(e, 0.0) * fleet.discharge_efficiency / step_h)
            e -= p * step_h / fleet.discharge_efficiency
            battery[t] = p
        elif t >= window[1]:
            p = min(fleet.charge_kw, (fleet.capacity_kwh - e) / (step_h * fleet.charge_efficiency))
            e += p * step_h * fleet.charge_efficiency
            battery[t] = -p
        energy[t + 1] = e
    return DayRun(np.asarray(load_kw, dtype=np.float64), battery, energy)
