"""Both allocators: the target is met when it can be, and no site is ever asked for more than it can do."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from operators.allocation import Allocation, Fleet, qp_allocate, waterfill

Allocator = Callable[[Fleet, float, float], Allocation]
ALLOCATORS = {"waterfill": waterfill, "qp": qp_allocate}
#: Relative tolerance on the total: exact arithmetic for water-filling, solver tolerance for the QP.
TOLERANCE = {"waterfill": 1e-9, "qp": 1e-5}


@st.composite
def fleets(draw: st.DrawFn) -> Fleet:
    n = draw(st.integers(1, 40))
    values = st.floats(0.0, 20.0, allow_nan=False)
    column = st.lists(values, min_size=n, max_size=n)
    return Fleet(
        max_discharge_kw=np.array(draw(column)), max_charge_kw=np.array(draw(column)),
        energy_available_kwh=np.array(draw(column)), headroom_kwh=np.array(draw(column)),
        eligible=np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n))),
        solar_surplus_kw=np.array(draw(column)),
    )


def _check(name: str, fleet: Fleet, target: float, horizon: float) -> None:
    result = ALLOCATORS[name](fleet, target, horizon)
    discharge = target >= 0
    limits = fleet.limits_kw(discharge, horizon)
    given_kw = result.setpoints_kw * (1 if discharge else -1)
    assert np.all(given_kw >= -1e-9), "every setpoint has the sign of the target"
    assert np.all(given_kw <= limits + 1e-9), "no site beyond its power limit or its reserve over the window"
    energy = fleet.energy_available_kwh if discharge else fleet.headroom_kwh
    assert np.all(given_kw * horizon <= np.maximum(energy, 0) + 1e-6), "no site below reserve / above full"
    assert np.all(result.setpoints_kw[~fleet.eligible] == 0), "ineligible (offline) sites get nothing"
    capacity = float(limits.sum())
    if capacity > abs(target):
        assert result.achieved_kw == pytest.approx(target, rel=TOLERANCE[name], abs=1e-6)
        assert result.shortfall_kw == pytest.approx(0.0, abs=1e-5)
    else:
        assert result.shortfall_kw == pytest.approx(abs(target) - capacity, abs=1e-9)
        assert np.allclose(given_kw, limits), "an infeasible target takes every site to its limit"


@pytest.mark.parametrize("name", ALLOCATORS)
@settings(max_examples=60, deadline=None)
@given(fleet=fleets(), fraction=st.floats(0.0, 1.5), discharge=st.booleans(), horizon=st.floats(0.05, 4.0))
def test_allocations_meet_feasible_targets_within_every_limit(name: str, fleet: Fleet, fraction: float,
                                                              discharge: bool, horizon: float) -> None:
    capacity = float(fleet.limits_kw(discharge, horizon).sum())
    target = fraction * capacity * (1 if discharge else -1)
    _check(name, fleet, target, horizon)


def test_waterfill_spreads_by_energy_until_sites_fill_up() -> None:
    fleet = Fleet(max_discharge_kw=np.array([5.0, 5.0, 1.0]), max_charge_kw=np.zeros(3),
                  energy_available_kwh=np.array([10.0, 20.0, 30.0]), headroom_kwh=np.zeros(3),
                  eligible=np.array([True, True, True]))
    result = waterfill(fleet, 6.0, 1.0)
    # Proportional shares would be 1:2:3 (1, 2, 3 kW); the third site caps at 1 kW and the other
    # two share the remaining 5 kW in proportion 1:2.
    assert np.allclose(result.setpoints_kw, [5 / 3, 10 / 3, 1.0])


def test_a_site_near_its_reserve_cannot_be_drained_below_it_within_the_window() -> None:
    fleet = Fleet(max_discharge_kw=np.array([5.0]), max_charge_kw=np.array([5.0]),
                  energy_available_kwh=np.array([1.0]), headroom_kwh=np.array([9.0]),
                  eligible=np.array([True]))
    result = waterfill(fleet, 5.0, 0.5)
    assert result.setpoints_kw[0] == pytest.approx(2.0)
    assert result.shortfall_kw == pytest.approx(3.0)


def test_the_qp_prefers_sites_with_solar_surplus_when_charging() -> None:
    fleet = Fleet(max_discharge_kw=np.full(2, 5.0), max_charge_kw=np.full(2, 5.0),
                  energy_available_kwh=np.full(2, 5.0), headroom_kwh=np.full(2, 10.0),
                  eligible=np.array([True, True]), solar_surplus_kw=np.array([0.0, 4.0]))
    result = qp_allocate(fleet, -4.0, 1.0, solar_preference=1.0)
    assert result.achieved_kw == pytest.approx(-4.0, abs=1e-6)
    assert result.setpoints_kw[1] < result.setpoints_kw[0] < 0, "the solar site charges more"


def test_fleet_arrays_must_agree_in_length() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        Fleet(np.zeros(2), np.zeros(2), np.zeros(3), np.zeros(2), np.ones(2, dtype=bool))
