"""Planner properties: reserve, limits, storm watch, never worse than idle; and the central-LP reference."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from siteplan.central import plan_fleet
from siteplan.planner import (
    Battery,
    PlanInputs,
    StormWatch,
    Tariff,
    idle_cost,
    owner_cost,
    plan_site,
    replay_energy,
    storm_hold,
)

STEPS = 96
START = datetime(2026, 12, 1, tzinfo=UTC)
TOL_KWH = 1e-6
TOL_KW = 1e-6
PROPS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def sites(draw: st.DrawFn, steps: int = STEPS) -> PlanInputs:
    """A site with a random battery, a day of prices (negative ones too), load and solar."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    capacity = draw(st.floats(2.0, 20.0))
    battery = Battery(capacity, draw(st.floats(0.0, 10.0)), draw(st.floats(0.0, 10.0)),
                      draw(st.floats(0.0, 60.0)), draw(st.floats(0.0, 100.0)),
                      draw(st.floats(0.7, 1.0)))
    t = np.arange(steps)
    prices = 80 + 60 * np.sin(2 * np.pi * t / steps * draw(st.integers(1, 3))) + rng.normal(0, 30, steps)
    load = 0.3 + rng.random(steps) * 2.0
    solar = np.maximum(0.0, draw(st.floats(0.0, 8.0)) * np.sin((t - steps / 4) / (steps / 2) * np.pi))
    tariff = Tariff(draw(st.floats(0.0, 150.0)), draw(st.floats(0.0, 60.0)) + 1.0)
    return PlanInputs(battery, prices, load, solar, tariff)


def check_limits(inputs: PlanInputs, power: np.ndarray, energy: np.ndarray) -> None:
    b = inputs.battery
    assert np.all(power >= -b.max_charge_kw - TOL_KW)
    assert np.all(power <= b.max_discharge_kw + TOL_KW)
    assert np.all(energy >= b.floor_kwh - TOL_KWH)
    assert np.all(energy <= b.capacity_kwh + TOL_KWH)


@PROPS
@given(sites())
def test_never_below_reserve_never_beyond_limits_never_dearer_than_idle(inputs: PlanInputs) -> None:
    plan = plan_site(inputs)
    check_limits(inputs, plan.power_kw, plan.energy_kwh)
    # The stored energy follows from the charge and discharge parts with the losses.
    b = inputs.battery
    steps = plan.energy_kwh[0] + np.cumsum(b.eta * plan.charge_kw * inputs.dt_h
                                           - plan.discharge_kw * inputs.dt_h / b.eta)
    np.testing.assert_allclose(plan.energy_kwh[1:], steps, atol=1e-6)
    # What the device runs (the net power) keeps the reserve too: netting only saves losses.
    assert np.all(replay_energy(plan.power_kw, b.energy_kwh, b.eta) >= b.floor_kwh - TOL_KWH)
    # The owner's bill, priced from the plan's grid power, never exceeds leaving the battery idle.
    assert owner_cost(plan.grid_kw, inputs.prices_per_mwh, inputs.tariff) <= idle_cost(inputs) + 1e-6
    np.testing.assert_allclose(plan.grid_kw, inputs.load_kw - inputs.solar_kw - plan.power_kw, atol=1e-6)


@PROPS
@given(sites(), st.integers(0, STEPS - 1), st.integers(1, 24))
def test_full_before_a_storm_watch_begins_and_held_until_it_lapses(inputs: PlanInputs, begin: int,
                                                                   length: int) -> None:
    b = inputs.battery
    watch = StormWatch(START + timedelta(minutes=15 * begin),
                       START + timedelta(minutes=15 * (begin + length)))
    hold, may = storm_hold(b, START, STEPS, watch)
    inputs = PlanInputs(b, inputs.prices_per_mwh, inputs.load_kw, inputs.solar_kw, inputs.tariff, hold, may)
    plan = plan_site(inputs)
    check_limits(inputs, plan.power_kw, plan.energy_kwh)
    last = min(STEPS, begin + length)
    reachable = b.energy_kwh + b.eta * b.max_charge_kw * inputs.dt_h * begin
    if reachable >= b.capacity_kwh:  # time enough to fill: full when the watch begins, through its end
        assert np.all(plan.energy_kwh[begin:last + 1] >= b.capacity_kwh - TOL_KWH)
    else:  # not enough time: charging flat out until it begins
        assert plan.energy_kwh[begin] >= reachable - TOL_KWH
    assert np.all(plan.discharge_kw[begin:last] <= TOL_KW)


def test_own_solar_first_no_import_while_exporting() -> None:
    rng = np.random.default_rng(1)
    t = np.arange(STEPS)
    solar = np.maximum(0.0, 6 * np.sin((t - 24) / 48 * np.pi))
    inputs = PlanInputs(Battery(10, 5, 5, 20, 50), 80 + rng.normal(0, 40, STEPS), 0.5 + rng.random(STEPS),
                        solar)
    plan = plan_site(inputs)
    surplus = solar > inputs.load_kw
    # Never imports while there is surplus solar to use; the battery takes it before the grid.
    assert np.all(plan.grid_kw[surplus] <= 1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sum_of_local_optima_equals_central_lp_and_joining_sites_change_nobody(seed: int) -> None:
    fleet = [_site(seed * 100 + i) for i in range(12)]
    local = [plan_site(s) for s in fleet]
    central = plan_fleet(fleet)
    assert abs(sum(p.cost for p in local) - central.cost) <= 1e-6 * max(1.0, abs(central.cost))
    # New sites joining: the central optimum over the larger fleet is the old one plus theirs, and
    # every earlier site's local plan is the same plan (it depends on its own inputs only).
    joined = [*fleet, *(_site(seed * 100 + 50 + i) for i in range(5))]
    bigger = plan_fleet(joined)
    again = [plan_site(s) for s in fleet]
    assert abs(bigger.cost - central.cost - sum(plan_site(s).cost for s in joined[12:])) <= 1e-6 * max(
        1.0, abs(bigger.cost))
    for before, after in zip(local, again, strict=True):
        np.testing.assert_allclose(before.power_kw, after.power_kw, atol=1e-9)


def _site(seed: int) -> PlanInputs:
    rng = np.random.default_rng(seed)
    t = np.arange(STEPS)
    cap = rng.uniform(4, 16)
    battery = Battery(cap, rng.uniform(1, 6), rng.uniform(1, 6), rng.uniform(0, 40), rng.uniform(0, 100))
    prices = 80 + 50 * np.sin(2 * np.pi * t / 48) + rng.normal(0, 25, STEPS)
    solar = np.maximum(0.0, rng.uniform(0, 6) * np.sin((t - 24) / 48 * np.pi))
    return PlanInputs(battery, prices, 0.3 + rng.random(STEPS), solar, Tariff(rng.uniform(20, 120), 10.0))


def test_the_cvxpy_problem_agrees_with_another_solver() -> None:
    """Clarabel (interior point, used) and HiGHS (simplex) reach the same optimum: the LP, not a quirk."""
    import cvxpy as cp

    from siteplan import planner

    inputs = _site(7)
    program = planner._Program(STEPS)
    clarabel = program.solve(inputs).cost
    program.problem.solve(solver=cp.HIGHS)
    assert abs(float(program.problem.value) - clarabel) <= 1e-5 * max(1.0, abs(clarabel))


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="finite"):
        PlanInputs(Battery(10, 5, 5, 20, 50), np.full(4, np.nan), np.zeros(4), np.zeros(4))
    with pytest.raises(ValueError, match="one value per step"):
        PlanInputs(Battery(10, 5, 5, 20, 50), np.zeros(4), np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="importing must cost more"):
        Tariff(-10.0, 5.0)
    with pytest.raises(ValueError, match="percentages"):
        Battery(10, 5, 5, 120, 50)
