"""The planner's inputs from the live aggregate and the stored forecast, and the plan as dispatches."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from core.rows import ForecastPoint
from peak.fleet import FleetCapacity
from peak.inputs import fleet_from_aggregate, forecast_for_day
from peak.planner import LoadForecast, Plan, Planner
from peak.schedule import dispatch_specs

DAY = datetime(2026, 3, 2, tzinfo=UTC)
STEP = timedelta(hours=1)


def points(hours: range, mean: float = 50.0) -> list[ForecastPoint]:
    return [ForecastPoint("r1", "node_load", "feeder-1", "holt-winters", DAY - timedelta(hours=6),
                          DAY + h * STEP, h + 7, mean + h, mean + h - 12.8155, mean + h, mean + h + 12.8155)
            for h in hours]


def test_the_fleet_is_the_estimate_over_all_members_with_its_coverage() -> None:
    fields = {"est_available_discharge_kw": "40", "est_available_charge_kw": "30",
              "est_energy_available_kwh": "80", "est_charge_headroom_kwh": "20", "coverage": "0.5",
              "available_discharge_kw": "20"}
    fleet = fleet_from_aggregate(fields)
    assert (fleet.discharge_kw, fleet.charge_kw, fleet.energy_kwh, fleet.headroom_kwh, fleet.coverage) == (
        40.0, 30.0, 80.0, 20.0, 0.5)
    with pytest.raises(KeyError, match="coverage"):
        fleet_from_aggregate({k: v for k, v in fields.items() if k != "coverage"})


def test_the_day_comes_from_the_points_with_the_std_from_the_band() -> None:
    forecast = forecast_for_day(points(range(30)), DAY, STEP, 24, worse_than_naive=True)
    assert forecast is not None and forecast.worse_than_naive and forecast.model == "holt-winters"
    assert forecast.mean_kw[5] == 55.0
    assert np.allclose(forecast.std_kw, 10.0, atol=1e-3)  # q90 - mean = 1.2816 sigma


def test_a_forecast_missing_an_interval_of_the_day_is_no_forecast() -> None:
    assert forecast_for_day(points(range(20)), DAY, STEP, 24) is None


def test_the_rest_of_a_plan_becomes_dispatches_of_equal_power() -> None:
    load = np.array([40.0] * 16 + [60.0, 70.0, 70.0, 60.0] + [40.0] * 4)
    plan = Planner(24, 1.0).plan(LoadForecast(DAY, STEP, load, np.zeros(24)), FleetCapacity(20, 20, 30, 0))
    assert isinstance(plan, Plan)
    specs = dispatch_specs(plan, "feeder-1", "peak-feeder-1-20260302", DAY + timedelta(hours=17, minutes=30))
    assert all(s.node_id == "feeder-1" and s.end > s.start for s in specs)
    assert specs[0].start == DAY + timedelta(hours=17, minutes=30)  # the interval in progress starts now
    assert specs[0].dispatch_id == "peak-feeder-1-20260302-1700"
    discharged = sum(s.target_kw * (s.end - s.start).total_seconds() / 3600 for s in specs if s.target_kw > 0)
    assert discharged == pytest.approx(plan.discharge_kw[17:].sum() - 0.5 * plan.discharge_kw[17], abs=0.5)
    assert any(s.target_kw < 0 for s in specs)  # the recharge is sent too
