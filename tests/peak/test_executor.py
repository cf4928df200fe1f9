"""The executor holds the threshold on the measured load and cannot make a rebound; the replay adds up."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from forecast.models import SeasonalNaive
from forecast.series import Series
from peak.executor import fixed_window, follow_threshold
from peak.fleet import FleetCapacity
from peak.planner import NoEvent, Plan
from peak.replay import fleet_for, replay_year


def evening_day(n: int = 96, level: float = 60.0) -> np.ndarray:
    hour = np.arange(n) * 24 / n
    return level + 40 * np.exp(-((hour - 18.5) ** 2) / 4)


@settings(max_examples=80, deadline=None)
@given(load=st.lists(st.floats(0, 100), min_size=1, max_size=96),
       threshold=st.one_of(st.none(), st.floats(-10, 120)),
       p_dis=st.floats(0, 50), p_ch=st.floats(0, 50), capacity=st.floats(0.1, 100), fill=st.floats(0, 1),
       floor=st.floats(-10, 120))
def test_following_the_threshold_never_raises_the_days_peak(load: list[float], threshold: float | None,
                                                            p_dis: float, p_ch: float, capacity: float,
                                                            fill: float, floor: float) -> None:
    fleet = FleetCapacity(p_dis, p_ch, capacity * fill, capacity * (1 - fill))
    run = follow_threshold(np.array(load), threshold, fleet, 0.25, capacity * fill, floor)
    assert not run.rebound
    assert run.net_kw.max() <= max(load) + 1e-9
    assert run.energy_kwh.min() >= -1e-9 and run.energy_kwh.max() <= capacity + 1e-9
    assert (run.battery_kw <= p_dis + 1e-9).all() and (run.battery_kw >= -p_ch - 1e-9).all()


def test_the_threshold_is_held_while_the_fleet_has_power_and_energy() -> None:
    load = evening_day()
    fleet = FleetCapacity(10, 10, 20, 0)
    run = follow_threshold(load, 92.0, fleet, 0.25, 20.0)
    assert abs(run.net_kw.max() - 92.0) < 1e-9
    assert run.energy_kwh[-1] > 19.9  # recharged the same evening, under the threshold


def test_the_billing_floor_keeps_energy_for_the_later_higher_interval() -> None:
    load = np.array([80.0] * 8 + [95.0] * 2 + [50.0] * 4)  # a long shoulder, then the peak
    fleet = FleetCapacity(15, 15, 6, 0)
    greedy = follow_threshold(load, 75.0, fleet, 0.25, 6.0)
    floored = follow_threshold(load, 75.0, fleet, 0.25, 6.0, floor_kw=85.0)  # the month already reached 85
    assert greedy.net_kw.max() == 95.0  # the shoulder took the energy the peak needed
    assert abs(floored.net_kw.max() - 85.0) < 1e-9


def test_a_fixed_window_with_immediate_recharge_makes_a_rebound() -> None:
    load = evening_day()  # peak at 18:30, window 16:00-18:00 ends before it, recharge lands on it
    run = fixed_window(load, (64, 72), FleetCapacity(10, 10, 20, 0), 0.25, 20.0)
    assert run.rebound and run.net_kw.max() > load.max()


def test_a_replay_plans_from_the_past_and_reports_months_without_rebounds() -> None:
    rng = np.random.default_rng(3)
    days = 24
    # Rising levels: the month's peak falls on a planned day, not in the first (unforecastable) week.
    values = np.concatenate([evening_day(level=50 + day) + rng.normal(0, 2, 96) for day in range(days)])
    start = datetime(2016, 1, 31, 23, tzinfo=UTC)  # 1 February, local midnight (UTC+1)
    series = Series(start, timedelta(minutes=15), values, "synthetic", "Etc/GMT-1")
    result = replay_year(series, SeasonalNaive(), fleet_for(series))
    first_week = [d.plan for d in result.days[:7]]
    assert all(isinstance(p, NoEvent) and "no load forecast" in p.reason for p in first_week)
    assert all(isinstance(d.plan, Plan) for d in result.days[7:])
    assert result.rebound_days == 0
    assert [m.month for m in result.months] == [2]
    month = result.months[0]
    assert month.events == days - 7
    assert month.peak_perfect_kw <= month.peak_vpp_kw <= month.peak_none_kw
    assert month.vpp_pct > 0
