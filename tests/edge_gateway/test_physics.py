"""Battery, solar and load physics: the invariants the control loop relies on, under any command sequence."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from edge_gateway import physics
from edge_gateway.physics import BatterySpec, step_battery

specs = st.builds(
    BatterySpec,
    capacity_kwh=st.floats(1.0, 100.0),
    max_charge_kw=st.floats(0.5, 20.0),
    max_discharge_kw=st.floats(0.5, 20.0),
    reserve_pct=st.floats(0.0, 50.0),
    round_trip_efficiency=st.floats(0.5, 1.0),
)
commands = st.lists(st.tuples(st.floats(-50.0, 50.0), st.floats(0.1, 3600.0)), min_size=1, max_size=60)


@given(spec=specs, start=st.floats(0.0, 1.0), sequence=commands)
def test_soc_stays_within_reserve_and_full_and_power_within_limits(
        spec: BatterySpec, start: float, sequence: list[tuple[float, float]]) -> None:
    soc = spec.reserve_pct + start * (100.0 - spec.reserve_pct)
    for requested_kw, dt_s in sequence:
        result = step_battery(spec, soc, requested_kw, dt_s)
        assert spec.reserve_pct - 1e-9 <= result.soc_pct <= 100.0 + 1e-9
        assert -spec.max_charge_kw - 1e-9 <= result.battery_kw <= spec.max_discharge_kw + 1e-9
        assert abs(result.battery_kw) <= abs(requested_kw) + 1e-9  # never more than asked
        assert math.copysign(1.0, result.battery_kw) == math.copysign(1.0, requested_kw) or \
            result.battery_kw == 0.0
        soc = result.soc_pct


@given(spec=specs, start=st.floats(0.0, 1.0), sequence=commands)
def test_stored_energy_changes_by_delivered_energy_with_one_way_losses(
        spec: BatterySpec, start: float, sequence: list[tuple[float, float]]) -> None:
    soc = spec.reserve_pct + start * (100.0 - spec.reserve_pct)
    eta = math.sqrt(spec.round_trip_efficiency)
    for requested_kw, dt_s in sequence:
        result = step_battery(spec, soc, requested_kw, dt_s)
        stored_change_kwh = (result.soc_pct - soc) / 100.0 * spec.capacity_kwh
        delivered_kwh = result.battery_kw * dt_s / 3600.0
        expected = -delivered_kwh / eta if delivered_kwh > 0 else -delivered_kwh * eta
        assert math.isclose(stored_change_kwh, expected, rel_tol=1e-6, abs_tol=1e-6)
        soc = result.soc_pct


def test_a_full_cycle_returns_the_round_trip_efficiency() -> None:
    spec = BatterySpec(capacity_kwh=10.0, max_charge_kw=5.0, max_discharge_kw=5.0, reserve_pct=0.0,
                       round_trip_efficiency=0.81)
    charged = step_battery(spec, 0.0, -5.0, 3600.0)  # 5 kWh from the grid stores 4.5 kWh
    assert math.isclose(charged.soc_pct, 45.0)
    out_kwh = 0.0
    soc = charged.soc_pct
    while soc > 1e-9:
        result = step_battery(spec, soc, 5.0, 60.0)
        out_kwh += result.battery_kw * 60.0 / 3600.0
        soc = result.soc_pct
    assert math.isclose(out_kwh, 5.0 * 0.81, rel_tol=1e-6)


def test_discharge_stops_at_the_backup_reserve_and_charge_at_full() -> None:
    spec = BatterySpec(capacity_kwh=10.0, max_charge_kw=5.0, max_discharge_kw=5.0, reserve_pct=20.0)
    assert step_battery(spec, 20.0, 5.0, 60.0).battery_kw == 0.0
    assert step_battery(spec, 100.0, -5.0, 60.0).battery_kw == 0.0
    # below the reserve: no discharge, but it may charge
    assert step_battery(spec, 10.0, 5.0, 60.0) == physics.BatteryStep(10.0, 0.0)
    assert step_battery(spec, 10.0, -5.0, 60.0).soc_pct > 10.0


@given(hour=st.floats(0.0, 24.0), clouds=st.floats(-1.0, 2.0), peak=st.floats(0.0, 20.0))
def test_solar_is_never_negative_never_above_peak_and_dark_at_night(hour: float, clouds: float,
                                                                     peak: float) -> None:
    output = physics.solar_kw(peak, hour, clouds)
    assert 0.0 <= output <= peak
    if hour <= 6.0 or hour >= 18.0:
        assert output == 0.0


@given(hour=st.floats(0.0, 24.0), noise=st.floats(-2.0, 2.0), current=st.floats(0.0, 1.0),
       shock=st.floats(-1.0, 1.0))
def test_load_is_never_negative_and_clouds_stay_in_range(hour: float, noise: float, current: float,
                                                         shock: float) -> None:
    assert physics.household_load_kw(0.5, hour, noise) >= 0.0
    assert 0.1 <= physics.next_cloud_factor(current, shock) <= 1.0


# -- the array twins: what the simulator steps thousands of sites with --------------------------------------

rows = st.lists(st.tuples(specs, st.floats(0.0, 1.0), st.floats(-50.0, 50.0)), min_size=1, max_size=40)


@given(table=rows, dt_s=st.floats(-1.0, 3600.0))
def test_stepping_batteries_as_arrays_gives_the_scalar_step_exactly(
        table: list[tuple[BatterySpec, float, float]], dt_s: float) -> None:
    spec_list = [spec for spec, _, _ in table]
    soc = [spec.reserve_pct + start * (100.0 - spec.reserve_pct) for spec, start, _ in table]
    requested = [kw for _, _, kw in table]
    new_soc, power = physics.step_batteries(physics.BatteryArrays.of(spec_list), np.array(soc),
                                            np.array(requested), dt_s)
    for k, spec in enumerate(spec_list):
        assert step_battery(spec, soc[k], requested[k], dt_s) == physics.BatteryStep(new_soc[k], power[k])


@given(st.lists(st.tuples(st.floats(0.0, 24.0), st.floats(-1.0, 2.0), st.floats(0.0, 20.0),
                          st.floats(-2.0, 2.0), st.floats(0.0, 1.0), st.floats(-1.0, 1.0)),
                min_size=1, max_size=40))
def test_the_curves_as_arrays_agree_with_the_scalar_ones(
        table: list[tuple[float, float, float, float, float, float]]) -> None:
    hour, clouds, peak, noise, current, shock = (np.array(column) for column in zip(*table, strict=True))
    solar = physics.solar_kw_array(peak, hour, clouds)
    load = physics.household_load_kw_array(np.full(len(table), 0.5), hour, noise)
    cloud = physics.next_cloud_factors(current, shock)
    for k, (h, c, p, n, cur, s) in enumerate(table):
        assert math.isclose(solar[k], physics.solar_kw(p, h, c), rel_tol=1e-12, abs_tol=1e-12)
        assert math.isclose(load[k], physics.household_load_kw(0.5, h, n), rel_tol=1e-12, abs_tol=1e-12)
        assert cloud[k] == physics.next_cloud_factor(cur, s)
