"""The day-ahead peak LP: the brute-force threshold search agrees, and bad input is handled."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import cache

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from peak.fleet import FleetCapacity
from peak.planner import LoadForecast, NoEvent, Plan, Planner
from peak.reference import min_threshold

DAY = datetime(2016, 1, 4, tzinfo=UTC)
STEP = timedelta(minutes=15)


@cache
def planner(intervals: int, quantile: float = 0.5) -> Planner:
    return Planner(intervals, 0.25, quantile)


def forecast(mean: np.ndarray, std: np.ndarray | None = None, worse: bool = False) -> LoadForecast:
    return LoadForecast(DAY, STEP, mean, np.zeros(len(mean)) if std is None else std, "test", worse)


def evening_peak(n: int = 96) -> np.ndarray:
    hour = np.arange(n) * 24 / n
    return 60 + 40 * np.exp(-((hour - 18.5) ** 2) / 4)


def fleets() -> st.SearchStrategy[FleetCapacity]:
    return st.builds(
        lambda p_dis, p_ch, energy, room, eta: FleetCapacity(p_dis, p_ch, energy, room, 1.0, eta, eta),
        st.floats(0.5, 40), st.floats(0.5, 40), st.floats(0.5, 60), st.floats(0.0, 30), st.floats(0.8, 1.0))


@settings(max_examples=60, deadline=None)
@given(load=st.integers(4, 24).flatmap(lambda n: st.lists(st.floats(5, 100), min_size=n, max_size=n)),
       fleet=fleets())
def test_lp_peak_equals_the_brute_force_threshold_search(load: list[float], fleet: FleetCapacity) -> None:
    values = np.array(load)
    plan = planner(len(values)).plan(forecast(values), fleet)
    assert isinstance(plan, Plan)
    reference = min_threshold(values, fleet, 0.25)
    assert abs(plan.threshold_kw - reference) <= 1e-3 * abs(reference) + 1e-6
    # The schedule holds the threshold everywhere, recharge included, within every energy bound.
    assert plan.net_kw.max() <= plan.threshold_kw + 1e-4 * max(1.0, abs(plan.threshold_kw))
    assert plan.energy_kwh.min() >= -1e-6 * fleet.capacity_kwh
    assert plan.energy_kwh.max() <= fleet.capacity_kwh * (1 + 1e-6)
    assert plan.energy_kwh[-1] >= fleet.energy_kwh * (1 - 1e-5) - 1e-6


def test_a_day_is_shaved_and_recharged_under_the_threshold() -> None:
    load = evening_peak()
    fleet = FleetCapacity(10, 10, 20, 0)
    plan = planner(96).plan(forecast(load), fleet)
    assert isinstance(plan, Plan)
    assert plan.threshold_kw < load.max() - 5  # a real reduction on a 100 kW peak
    charging = plan.charge_kw > 1e-3
    assert charging.any()
    assert (load[charging] + plan.charge_kw[charging] <= plan.threshold_kw + 1e-4).all()
    assert plan.forecast_peak_kw == load.max()
    assert plan.energy_delivered_kwh > 0


def test_a_missing_forecast_means_no_event_with_the_reason() -> None:
    fleet = FleetCapacity(10, 10, 20, 0)
    none = planner(96).plan(None, fleet)
    assert isinstance(none, NoEvent) and "no load forecast" in none.reason
    gaps = evening_peak()
    gaps[40] = np.nan
    holed = planner(96).plan(forecast(gaps), fleet)
    assert isinstance(holed, NoEvent) and "missing" in holed.reason
    short = planner(96).plan(forecast(evening_peak(48)), fleet)
    assert isinstance(short, NoEvent) and "48 intervals" in short.reason


def test_coverage_below_90_percent_derates_the_plan_and_says_so() -> None:
    load = evening_peak()
    full = planner(96).plan(forecast(load), FleetCapacity(10, 10, 20, 0, coverage=0.95))
    partial = planner(96).plan(forecast(load), FleetCapacity(10, 10, 20, 0, coverage=0.6))
    assert isinstance(full, Plan) and isinstance(partial, Plan)
    assert full.notes == () and full.fleet.energy_kwh == 20
    assert partial.fleet.energy_kwh == 12 and partial.fleet.discharge_kw == 6
    assert any("coverage 60%" in note for note in partial.notes)
    assert partial.threshold_kw > full.threshold_kw
    assert partial.discharge_kw.max() <= 6 + 1e-6


def test_a_forecast_worse_than_the_naive_lowers_the_commitment() -> None:
    load = evening_peak()
    good = planner(96).plan(forecast(load), FleetCapacity(10, 10, 20, 0))
    poor = planner(96).plan(forecast(load, worse=True), FleetCapacity(10, 10, 20, 0))
    assert isinstance(good, Plan) and isinstance(poor, Plan)
    assert poor.fleet.energy_kwh == 10 and poor.energy_delivered_kwh < good.energy_delivered_kwh
    assert any("worse than the naive" in note for note in poor.notes)


def test_the_uncertainty_band_raises_the_threshold() -> None:
    load = evening_peak()
    fleet = FleetCapacity(10, 10, 20, 0)
    narrow = planner(96, 0.8).plan(forecast(load, np.full(96, 1.0)), fleet)
    wide = planner(96, 0.8).plan(forecast(load, np.full(96, 8.0)), fleet)
    assert isinstance(narrow, Plan) and isinstance(wide, Plan)
    assert wide.threshold_kw > narrow.threshold_kw
    assert wide.forecast_peak_kw == narrow.forecast_peak_kw == load.max()


def test_a_fleet_below_its_reserves_is_refused() -> None:
    refused = planner(96).plan(forecast(evening_peak()), FleetCapacity(10, 10, -1.0, 21))
    assert isinstance(refused, NoEvent) and refused.refused and "reserves" in refused.reason
