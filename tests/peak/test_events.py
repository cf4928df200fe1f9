"""The peak event record: planned, then completed from measured net load and battery power."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np

from peak.events import measured_event, planned_event
from peak.fleet import FleetCapacity
from peak.planner import LoadForecast, NoEvent, Plan, Planner

DAY = datetime(2016, 3, 1, tzinfo=UTC)
NOW = datetime(2016, 3, 2, tzinfo=UTC)


def test_a_day_is_recorded_as_planned_then_completed_with_the_counterfactual() -> None:
    load = np.array([50.0, 80.0, 100.0, 90.0, 60.0, 40.0])
    plan = Planner(6, 1.0).plan(LoadForecast(DAY, timedelta(hours=1), load, np.zeros(6)),
                                FleetCapacity(20, 20, 30, 0))
    assert isinstance(plan, Plan)
    event = planned_event("feeder-1", DAY, "p1", plan, DAY)
    assert event.status == "planned" and event.forecast_peak_kw == 100.0
    assert event.threshold_kw == plan.threshold_kw and math.isnan(event.actual_peak_kw)
    battery = np.array([0.0, 0.0, 15.0, 5.0, -10.0, -10.0])  # measured: +discharge, -recharge
    net = np.array([52.0, 83.0, 88.0, 87.0, 72.0, 50.0])
    done = measured_event(event, net, battery, 1.0, NOW)
    assert done.status == "completed" and done.plan_id == "p1" and done.recorded_at == NOW
    assert done.actual_peak_kw == 88.0
    assert done.counterfactual_peak_kw == 103.0  # net + battery at the peak interval
    assert done.energy_delivered_kwh == 20.0 and done.energy_recharged_kwh == 20.0
    assert not done.rebound


def test_a_recharge_that_makes_a_new_peak_is_a_rebound() -> None:
    event = planned_event("feeder-1", DAY, "p2", NoEvent("no load forecast for the day"), DAY)
    assert event.status == "no_event" and event.note == "no load forecast for the day"
    net = np.array([60.0, 70.0, 95.0])  # a recharge of 30 kW on a 65 kW hour
    battery = np.array([10.0, 20.0, -30.0])
    done = measured_event(event, net, battery, 1.0, NOW)
    assert done.counterfactual_peak_kw == 90.0 and done.actual_peak_kw == 95.0
    assert done.rebound and done.status == "no_event"


def test_a_refused_plan_keeps_its_reason() -> None:
    event = planned_event("feeder-1", DAY, "p3", NoEvent("below reserves", refused=True), DAY)
    assert event.status == "refused" and event.note == "below reserves"
