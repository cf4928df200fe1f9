"""The intraday executor follows the measured load, never makes a new peak, and re-plans exactly when told."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from peak.fleet import FleetCapacity
from peak.intraday import Intraday, Reading, Tolerances, reading_from_aggregate, replanned_event
from peak.planner import LoadForecast, NoEvent, Plan

DAY = datetime(2026, 12, 2, tzinfo=UTC)
HOUR = timedelta(hours=1)
ETA = 0.95


def evening(n: int = 24, level: float = 60.0, peak: float = 40.0) -> np.ndarray:
    hour = np.arange(n) * 24 / n
    return level + peak * np.exp(-((hour - 18.5) ** 2) / 4)


def forecast_of(mean: np.ndarray, step: timedelta = HOUR) -> LoadForecast:
    return LoadForecast(DAY, step, np.asarray(mean, dtype=np.float64), np.zeros(len(mean)), "test")


def fleet_with(energy: float, capacity: float, power: float, coverage: float = 1.0) -> FleetCapacity:
    return FleetCapacity(power, power, energy, capacity - energy, coverage)


def run_day(executor: Intraday, load: np.ndarray, forecast: LoadForecast, power: float, capacity: float,
            energy: float, available: list[float] | None = None,
            ) -> tuple[np.ndarray, np.ndarray, list[Reading]]:
    """Execute a day on ``load``: two readings an interval (at its start, then settled 5 minutes in),
    the fleet doing what was sent in between.

    Returns the battery power (+ discharge) per part interval (two per interval), the fleet's energy
    at each part's end, the readings.
    """
    step_h = executor.step_h
    parts = (timedelta(0), timedelta(minutes=5))
    battery, energies, readings = [0.0], [energy], []
    for i in range(len(load)):
        live = power if available is None else available[i]
        for j, offset in enumerate(parts):
            reading = Reading(DAY + i * executor.step + offset, float(load[i]) - battery[-1], battery[-1],
                              fleet_with(energy, capacity, live))
            readings.append(reading)
            executor.observe(reading)
            reason = executor.replan_reason(reading, "run-1")
            if reason is not None:
                executor.replan(reading, forecast, "run-1", reason)
            for target in executor.decide(reading):
                executor.sent_ok(target)
            p = executor.sent.get(i, (DAY, 0.0, 0.0))[1]
            hours = (parts[1] / executor.step if j == 0 else 1 - parts[1] / executor.step) * step_h
            battery.append(p)
            energy = energy - p * hours / ETA if p > 0 else energy - p * hours * ETA
            energies.append(energy)
    return np.array(battery[1:]), np.array(energies), readings


@settings(max_examples=60, deadline=None)
@given(load=st.lists(st.floats(0, 100), min_size=4, max_size=24),
       error=st.lists(st.floats(-0.3, 0.3), min_size=24, max_size=24),
       power=st.floats(0.5, 40), capacity=st.floats(1, 100), fill=st.floats(0, 1),
       drop=st.lists(st.floats(0, 1), min_size=24, max_size=24))
def test_the_executor_never_raises_the_days_peak_nor_commits_more_than_is_there(
        load: list[float], error: list[float], power: float, capacity: float, fill: float,
        drop: list[float]) -> None:
    actual = np.array(load)
    n = len(actual)
    predicted = actual * (1 + np.array(error[:n]))
    available = [power * (1 - d) for d in drop[:n]]
    executor = Intraday(DAY, HOUR, n)
    battery, energy, readings = run_day(executor, actual, forecast_of(predicted), power, capacity,
                                        capacity * fill, available)
    net = np.repeat(actual, 2) - battery
    assert net.max() <= actual.max() + 1e-9, "a new peak"
    assert energy.min() >= -1e-9 and energy.max() <= capacity + 1e-9
    for i, reading in enumerate(readings):
        assert -reading.fleet.charge_kw - 1e-9 <= battery[i] <= reading.fleet.discharge_kw + 1e-9


def plan_at(load: np.ndarray, at: int, energy: float = 40.0, capacity: float = 80.0, power: float = 20.0,
            tolerances: Tolerances | None = None) -> tuple[Intraday, Reading]:
    executor = Intraday(DAY, HOUR, len(load), tolerances or Tolerances())
    reading = Reading(DAY + at * HOUR + timedelta(minutes=2), float(load[at]), 0.0,
                      fleet_with(energy, capacity, power))
    executor.replan(reading, forecast_of(load), "run-1", "test")
    return executor, reading


@settings(max_examples=80, deadline=None)
@given(delta=st.floats(-30, 30))
def test_a_load_departure_triggers_a_replan_exactly_beyond_the_tolerance(delta: float) -> None:
    load = evening()
    executor, reading = plan_at(load, 10)
    plan = executor.basis.plan if executor.basis else None
    assert isinstance(plan, Plan)
    limit = 0.05 * float(plan.planning_load_kw.max())
    assume(abs(abs(delta) - limit) > 1e-6)
    moved = replace(reading, net_kw=reading.net_kw + delta)
    executor.observe(moved)
    reason = executor.replan_reason(moved, "run-1")
    assert (reason is not None) == (abs(delta) > limit), reason
    if reason:
        assert "off the plan's" in reason


@settings(max_examples=80, deadline=None)
@given(used=st.floats(-20, 20))
def test_an_energy_departure_triggers_a_replan_exactly_beyond_the_tolerance(used: float) -> None:
    executor, reading = plan_at(evening(), 10)
    plan = executor.basis.plan if executor.basis else None
    assert isinstance(plan, Plan)
    limit = 0.10 * plan.fleet.capacity_kwh
    assume(abs(abs(used) - limit) > 1e-6)
    fleet = reading.fleet
    moved = replace(reading, fleet=replace(fleet, energy_kwh=fleet.energy_kwh - used,
                                           headroom_kwh=fleet.headroom_kwh + used))
    executor.observe(moved)
    reason = executor.replan_reason(moved, "run-1")
    assert (reason is not None) == (abs(used) > limit), reason


@settings(max_examples=80, deadline=None)
@given(coverage=st.floats(0, 1))
def test_a_coverage_drop_triggers_a_replan_exactly_beyond_the_tolerance(coverage: float) -> None:
    executor, reading = plan_at(evening(), 10)
    assume(abs((1.0 - coverage) - 0.05) > 1e-9)
    moved = replace(reading, fleet=replace(reading.fleet, coverage=coverage))
    executor.observe(moved)
    reason = executor.replan_reason(moved, None)
    assert (reason is not None) == (1.0 - coverage > 0.05), reason


def test_a_new_forecast_run_triggers_a_replan_and_an_unread_one_does_not() -> None:
    executor, reading = plan_at(evening(), 10)
    assert executor.replan_reason(reading, None) is None
    assert executor.replan_reason(reading, "run-1") is None
    assert "new forecast run run-2" in (executor.replan_reason(reading, "run-2") or "")


def test_the_executor_planned_as_the_day_ahead_follows_the_plan_when_the_load_is_the_forecast() -> None:
    load = evening()
    executor = Intraday(DAY, HOUR, len(load))
    battery, _, _ = run_day(executor, load, forecast_of(load), 10.0, 40.0, 40.0)  # full before the peak
    assert len(executor.replans) == 1, [b.reason for b in executor.replans]
    plan = executor.replans[0].plan
    assert isinstance(plan, Plan)
    assert abs((np.repeat(load, 2) - battery).max() - plan.threshold_kw) < 0.2  # the dispatch resolution


def test_a_load_higher_than_forecast_replans_a_higher_threshold_and_sends_more_power() -> None:
    forecast = evening()
    actual = forecast + evening(level=0.0, peak=12.0)  # the evening comes in higher than forecast
    executor = Intraday(DAY, HOUR, len(forecast))
    battery, _, _ = run_day(executor, actual, forecast_of(forecast), 20.0, 40.0, 40.0)
    reasons = [b.reason for b in executor.replans]
    assert len(reasons) >= 2 and any("off the plan's" in r for r in reasons), reasons
    first = executor.replans[0].plan
    moved = next(b for b in executor.replans if "off the plan's" in b.reason)
    assert isinstance(first, Plan) and isinstance(moved.plan, Plan)
    assert moved.plan.threshold_kw > first.threshold_kw
    peak_hour = int(np.argmax(actual))
    planned_then = first.discharge_kw[peak_hour - executor.replans[0].first]
    assert battery[2 * peak_hour + 1] > planned_then + 1.0, "the dispatch follows the higher load"
    assert (np.repeat(actual, 2) - battery).max() < actual.max() - 5.0, "it still shaves the peak"


def test_a_power_change_below_the_resolution_is_not_sent_and_above_it_replaces() -> None:
    load = evening()
    executor, reading = plan_at(load, 18, energy=40.0)
    [first] = executor.decide(reading)
    assert not first.replace and first.target_kw > 0
    executor.sent_ok(first)
    assert executor.dispatch_id("peak-x", first) == "peak-x-1800"
    nudged = replace(reading, at=reading.at + timedelta(minutes=1), net_kw=reading.net_kw + 0.01)
    assert executor.decide(nudged) == []
    moved = replace(reading, at=reading.at + timedelta(minutes=2), net_kw=reading.net_kw + 2.0)
    [again] = executor.decide(moved)
    assert again.replace and again.start == first.start and again.target_kw > first.target_kw


def test_the_first_readings_of_an_interval_carry_the_last_ones_load_and_trigger_no_replan() -> None:
    load = evening()
    executor, reading = plan_at(load, 17)
    stepped = float(load[18]) - float(load[17])  # the load steps up at 18:00 by more than the tolerance
    plan = executor.basis.plan if executor.basis else None
    assert isinstance(plan, Plan) and abs(stepped) > 0.05 * float(plan.planning_load_kw.max())
    lagging = replace(reading, at=DAY + 18 * HOUR + timedelta(seconds=20))  # still 17:xx's load
    executor.observe(lagging)
    assert executor.replan_reason(lagging, "run-1") is None
    settled = replace(reading, at=DAY + 18 * HOUR + timedelta(minutes=2), net_kw=float(load[18]))
    executor.observe(settled)
    assert executor.replan_reason(settled, "run-1") is None, "the plan's 18:00 load is what came"
    off = replace(settled, at=settled.at + timedelta(minutes=1), net_kw=float(load[18]) + 3 * stepped)
    executor.observe(off)
    assert executor.replan_reason(off, "run-1") is not None


def test_with_a_lead_the_next_intervals_dispatch_is_sent_before_its_window() -> None:
    load = evening()
    executor = Intraday(DAY, HOUR, len(load), lead=timedelta(minutes=2))
    reading = Reading(DAY + 17 * HOUR + timedelta(minutes=58), float(load[17]), 0.0, fleet_with(40, 80, 20))
    executor.observe(reading)
    executor.replan(reading, forecast_of(load), "run-1", "test")
    targets = executor.decide(reading)
    assert [t.interval for t in targets] == [17, 18]
    assert targets[1].start == DAY + 18 * HOUR


def test_without_a_forecast_there_is_no_event_and_nothing_is_sent() -> None:
    executor = Intraday(DAY, HOUR, 24)
    reading = Reading(DAY + 18 * HOUR, 100.0, 0.0, fleet_with(40, 80, 20))
    basis = executor.replan(reading, None, "", "the executor began")
    assert isinstance(basis.plan, NoEvent) and "no load forecast" in basis.plan.reason
    assert executor.decide(reading) == []


def test_the_event_row_carries_the_threshold_in_force_and_every_replan() -> None:
    forecast = evening()
    actual = forecast + evening(level=0.0, peak=12.0)
    executor = Intraday(DAY, HOUR, len(forecast))
    run_day(executor, actual, forecast_of(forecast), 10.0, 40.0, 40.0)
    event = replanned_event("feeder-1", DAY, "peak-feeder-1-20261202", executor.replans, executor.seen_kw,
                            DAY + timedelta(days=1))
    in_force = executor.in_force.plan if executor.in_force else None
    assert isinstance(in_force, Plan)
    assert event.status == "planned" and event.threshold_kw == in_force.threshold_kw
    assert event.forecast_peak_kw >= float(actual.max()) - 1e-9
    assert event.note.count("planned at") == len(executor.replans) >= 2
    assert "the executor began" in event.note and "off the plan's" in event.note


def test_a_reading_comes_from_the_live_aggregate() -> None:
    fields = {"grid_kw": "90", "battery_kw": "10", "est_available_discharge_kw": "20",
              "est_available_charge_kw": "20", "est_energy_available_kwh": "30",
              "est_charge_headroom_kwh": "10", "coverage": "0.95"}
    reading = reading_from_aggregate(fields, DAY)
    assert reading.load_kw == 100.0 and reading.fleet.energy_kwh == 30.0 and reading.fleet.coverage == 0.95
