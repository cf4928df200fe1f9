"""Pure site physics for the fleet simulator: battery, solar, household load. No I/O, no clocks.

Kept apart from the simulator so the invariants the control loop relies on
(state of charge never leaves [reserve, 100], power never beyond the inverter's
limits, losses accounted with the round-trip efficiency) are properties of a
few small functions that Hypothesis can hammer directly.

Sign convention as in SiteTelemetry: battery power positive = discharging.

Each function has an array twin (``*_array``, :func:`step_batteries`) that a
simulator stepping thousands of sites at once uses: the same operations in the
same order on numpy arrays, so the battery step gives the scalar one's floats
exactly and the curves (``sin``, ``exp``) agree to rounding; the property tests
hold the twins to that.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

SECONDS_PER_HOUR = 3600.0

F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class BatterySpec:
    """A home battery: usable energy, inverter limits, backup reserve and round-trip efficiency."""

    capacity_kwh: float
    max_charge_kw: float
    max_discharge_kw: float
    reserve_pct: float
    round_trip_efficiency: float = 0.9

    @property
    def one_way_efficiency(self) -> float:
        """Losses split evenly between charging and discharging, so a full cycle loses the round trip."""
        return math.sqrt(self.round_trip_efficiency)


@dataclass(frozen=True)
class BatteryStep:
    """Result of running the battery for one step: new state of charge and the power actually delivered."""

    soc_pct: float
    battery_kw: float


def power_limits(spec: BatterySpec, soc_pct: float, dt_s: float) -> tuple[float, float]:
    """(most charge kW, most discharge kW) this step can sustain, both >= 0.

    The inverter limits apply, and so does energy: discharge stops at the
    backup reserve and charge stops at full, losses included.
    """
    dt_h = dt_s / SECONDS_PER_HOUR
    eta = spec.one_way_efficiency
    stored_above_reserve = max(0.0, soc_pct - spec.reserve_pct) / 100.0 * spec.capacity_kwh
    room_below_full = max(0.0, 100.0 - soc_pct) / 100.0 * spec.capacity_kwh
    most_discharge = min(spec.max_discharge_kw, stored_above_reserve * eta / dt_h)
    most_charge = min(spec.max_charge_kw, room_below_full / eta / dt_h)
    return most_charge, most_discharge


def step_battery(spec: BatterySpec, soc_pct: float, requested_kw: float, dt_s: float) -> BatteryStep:
    """Run the battery at ``requested_kw`` (clamped to what it can do) for ``dt_s`` seconds.

    Charging at P kW for t hours stores P*t*eta kWh; discharging P kW draws
    P*t/eta kWh from the cells. The result is clamped into [reserve, 100] only
    to absorb float rounding; the power limits already keep it there.
    """
    if dt_s <= 0:
        return BatteryStep(soc_pct, 0.0)
    most_charge, most_discharge = power_limits(spec, soc_pct, dt_s)
    power = min(max(requested_kw, -most_charge), most_discharge)
    dt_h = dt_s / SECONDS_PER_HOUR
    eta = spec.one_way_efficiency
    stored_delta_kwh = -power * dt_h * eta if power < 0 else -power * dt_h / eta
    soc = soc_pct + stored_delta_kwh / spec.capacity_kwh * 100.0
    floor = min(spec.reserve_pct, soc_pct)  # a battery that starts below reserve may only charge
    return BatteryStep(min(100.0, max(floor, soc)), power)


def clear_sky_fraction(hour_of_day: float) -> float:
    """Solar output as a fraction of peak for a clear day: a sine between 06:00 and 18:00 local time."""
    if not 6.0 < hour_of_day < 18.0:
        return 0.0
    return math.sin(math.pi * (hour_of_day - 6.0) / 12.0)


def solar_kw(peak_kw: float, hour_of_day: float, cloud_factor: float) -> float:
    """PV output in kW: the clear-sky curve dimmed by clouds (``cloud_factor`` in [0, 1], 1 = clear)."""
    return max(0.0, peak_kw * clear_sky_fraction(hour_of_day) * min(1.0, max(0.0, cloud_factor)))


def household_load_kw(base_kw: float, hour_of_day: float, noise: float) -> float:
    """House consumption: a base load with morning and evening peaks, times ``1 + noise``; never negative."""
    morning = 0.8 * math.exp(-(((hour_of_day - 7.5) / 1.2) ** 2))
    evening = 1.5 * math.exp(-(((hour_of_day - 19.0) / 2.0) ** 2))
    return max(0.0, base_kw * (1.0 + morning + evening) * (1.0 + noise))


def next_cloud_factor(current: float, shock: float) -> float:
    """Clouds drift: a mean-reverting walk towards 0.8, kept inside [0.1, 1]."""
    return min(1.0, max(0.1, current + 0.05 * (0.8 - current) + shock))


@dataclass(frozen=True)
class BatteryArrays:
    """Many batteries' specs as columns (one row per site), for :func:`step_batteries`."""

    capacity_kwh: F64
    max_charge_kw: F64
    max_discharge_kw: F64
    reserve_pct: F64
    one_way_efficiency: F64

    @classmethod
    def of(cls, specs: list[BatterySpec]) -> BatteryArrays:
        """The columns of ``specs``, in order."""
        return cls(np.array([s.capacity_kwh for s in specs], dtype=np.float64),
                   np.array([s.max_charge_kw for s in specs], dtype=np.float64),
                   np.array([s.max_discharge_kw for s in specs], dtype=np.float64),
                   np.array([s.reserve_pct for s in specs], dtype=np.float64),
                   np.array([s.one_way_efficiency for s in specs], dtype=np.float64))

    def __getitem__(self, rows: slice) -> BatteryArrays:
        """The specs of ``rows`` (views, no copies)."""
        return BatteryArrays(self.capacity_kwh[rows], self.max_charge_kw[rows], self.max_discharge_kw[rows],
                             self.reserve_pct[rows], self.one_way_efficiency[rows])


def step_batteries(specs: BatteryArrays, soc_pct: F64, requested_kw: F64, dt_s: float) -> tuple[F64, F64]:
    """:func:`step_battery` for every row at once: (new state of charge, power delivered), new arrays."""
    if dt_s <= 0:
        return soc_pct.copy(), np.zeros_like(soc_pct)
    dt_h = dt_s / SECONDS_PER_HOUR
    eta, capacity = specs.one_way_efficiency, specs.capacity_kwh
    stored_above_reserve = np.maximum(0.0, soc_pct - specs.reserve_pct) / 100.0 * capacity
    room_below_full = np.maximum(0.0, 100.0 - soc_pct) / 100.0 * capacity
    most_discharge = np.minimum(specs.max_discharge_kw, stored_above_reserve * eta / dt_h)
    most_charge = np.minimum(specs.max_charge_kw, room_below_full / eta / dt_h)
    power = np.minimum(np.maximum(requested_kw, -most_charge), most_discharge)
    stored_delta_kwh = np.where(power < 0, -power * dt_h * eta, -power * dt_h / eta)
    soc = soc_pct + stored_delta_kwh / capacity * 100.0
    floor = np.minimum(specs.reserve_pct, soc_pct)
    return np.minimum(100.0, np.maximum(floor, soc)), power


def solar_kw_array(peak_kw: F64, hour_of_day: F64, cloud_factor: F64) -> F64:
    """:func:`solar_kw` for every row at once."""
    daylight = (hour_of_day > 6.0) & (hour_of_day < 18.0)
    clear_sky = np.where(daylight, np.sin(np.pi * (hour_of_day - 6.0) / 12.0), 0.0)
    return np.maximum(0.0, peak_kw * clear_sky * np.clip(cloud_factor, 0.0, 1.0))


def household_load_kw_array(base_kw: F64, hour_of_day: F64, noise: F64) -> F64:
    """:func:`household_load_kw` for every row at once."""
    morning = 0.8 * np.exp(-(((hour_of_day - 7.5) / 1.2) ** 2))
    evening = 1.5 * np.exp(-(((hour_of_day - 19.0) / 2.0) ** 2))
    return np.maximum(0.0, base_kw * (1.0 + morning + evening) * (1.0 + noise))


def next_cloud_factors(current: F64, shock: F64) -> F64:
    """:func:`next_cloud_factor` for every row at once."""
    return np.minimum(1.0, np.maximum(0.1, current + 0.05 * (0.8 - current) + shock))
