"""A VPP node as the bidding asset: sized from its live aggregate, bidding only the flexibility around it.

(What a cleared node bid becomes on the real stack: tests/integration/test_bidding_node.py.)
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bidding.artifacts import artifact
from bidding.bids import ENERGY
from bidding.node_asset import (
    NodeAvailability,
    NodeBaseline,
    NodeUnavailableError,
    dispatch_for,
    dispatch_id,
    node_asset,
    node_of,
    size_node,
)
from bidding.tasks import PriceForecast, RunInputs, bid_for, value_of
from core.dispatch_spec import DISPATCH_ID

T0 = datetime(2026, 12, 1, 6, tzinfo=UTC)
HOUR = timedelta(hours=1)
QUARTER_MS = 15 * 60_000


def aggregate(coverage: float = 1.0, discharge_kw: float = 500.0, charge_kw: float = 400.0,
              energy_kwh: float = 800.0, headroom_kwh: float = 1200.0,
              reporting: int = 100) -> dict[str, str]:
    """A ``node:{id}`` hash as Redis returns it (strings)."""
    expected = max(reporting, round(reporting / coverage)) if coverage > 0 else reporting
    return {"node_id": "feeder-0-0", "event_time": str(int(T0.timestamp() * 1000)), "coverage": str(coverage),
            "reporting_sites": str(reporting), "expected_sites": str(expected),
            "available_discharge_kw": str(discharge_kw), "available_charge_kw": str(charge_kw),
            "energy_available_kwh": str(energy_kwh), "charge_headroom_kwh": str(headroom_kwh)}


def plan_hash(planned_kw: list[float], start: datetime = T0) -> dict[str, str]:
    """A ``plan:node:{id}`` hash (15-minute intervals) as Redis returns it."""
    return {"start_ms": str(int(start.timestamp() * 1000)), "interval_minutes": "15",
            "steps": str(len(planned_kw)), "planned_kw": json.dumps(planned_kw),
            "coverage": json.dumps([1.0] * len(planned_kw))}


def node_inputs(sizing_coverage: float = 1.0, planned_kw: list[float] | None = None,
                horizon: int = 6) -> RunInputs:
    available = NodeAvailability.from_fields("feeder-0-0", aggregate(sizing_coverage))
    plan = NodeBaseline.from_fields(plan_hash(planned_kw if planned_kw is not None else [100.0] * 96))
    sized = size_node(available, plan, T0, 3600, horizon)
    return RunInputs(node_asset("feeder-0-0"), "DE", T0, 3600, horizon, sized.power_mw, sized.energy_mwh,
                     sized.soc_mwh, charge_power_mw=sized.charge_mw, baseline_mw=sized.baseline_mw,
                     notes=sized.notes)


def energy_forecast(mean: list[float], std: float = 10.0) -> PriceForecast:
    return PriceForecast(ENERGY, T0, 3600, tuple(mean), (std,) * len(mean), T0)


def test_asset_ids_name_nodes() -> None:
    assert node_of(node_asset("feeder-0-0")) == "feeder-0-0"
    assert node_of("battery-1") is None and node_of("node:") is None


def test_limits_come_from_the_reporting_sites_and_coverage_below_90_percent_derates_and_says_so() -> None:
    full = size_node(NodeAvailability.from_fields("f", aggregate(1.0)), None, T0, 3600, 4)
    assert (full.power_mw, full.charge_mw, full.soc_mwh, full.energy_mwh) == (0.5, 0.4, 0.8, 2.0)
    assert full.derate == 1.0 and not any("coverage" in n for n in full.notes)
    at_90 = size_node(NodeAvailability.from_fields("f", aggregate(0.9)), None, T0, 3600, 4)
    assert at_90.derate == 1.0 and at_90.power_mw == 0.5
    low = size_node(NodeAvailability.from_fields("f", aggregate(0.6)), None, T0, 3600, 4)
    assert low.derate == 0.6 and low.power_mw == pytest.approx(0.3) and low.energy_mwh == pytest.approx(1.2)
    assert any("coverage 60% below 90%" in n for n in low.notes)


def test_an_old_aggregate_is_noted() -> None:
    available = NodeAvailability.from_fields("f", aggregate())
    fresh = size_node(available, None, T0, 3600, 4, now=T0 + timedelta(seconds=30))
    old = size_node(available, None, T0, 3600, 4, now=T0 + timedelta(minutes=10))
    assert not any("old" in n for n in fresh.notes) and "live aggregate 600 s old" in old.notes


def test_a_node_without_an_aggregate_or_reporting_sites_cannot_be_sized() -> None:
    with pytest.raises(NodeUnavailableError, match="no live aggregate"):
        NodeAvailability.from_fields("f", {})
    with pytest.raises(NodeUnavailableError, match="negative or non-finite"):
        NodeAvailability.from_fields("f", {**aggregate(), "available_charge_kw": "nan"})
    with pytest.raises(NodeUnavailableError, match="none of its"):
        size_node(NodeAvailability.from_fields("f", aggregate(reporting=0, coverage=0.0)), None, T0, 3600, 4)


def test_the_baseline_is_the_plan_on_the_market_grid_and_gaps_are_idle_and_noted() -> None:
    planned = [float(k) for k in range(8)]  # two hours of quarter hours
    plan = NodeBaseline.from_fields(plan_hash(planned))
    assert plan is not None
    hourly, covered = plan.on_grid(T0, 3600, 3)
    assert hourly.tolist() == [1.5, 5.5, 0.0] and covered == 2
    five, covered = plan.on_grid(T0 + timedelta(minutes=10), 300, 2)  # 06:10-06:15 in q0, 06:15-06:20 in q1
    assert five.tolist() == [0.0, 1.0] and covered == 2
    sized = size_node(NodeAvailability.from_fields("f", aggregate()), plan, T0, 3600, 3)
    assert sized.baseline_mw == (0.0015, 0.0055, 0.0)
    assert any("covers 2 of 3" in n for n in sized.notes)
    none = size_node(NodeAvailability.from_fields("f", aggregate()), None, T0, 3600, 3)
    assert none.baseline_mw == (0.0, 0.0, 0.0) and any("no aggregate plan" in n for n in none.notes)
    assert NodeBaseline.from_fields({}) is None


def test_a_baseline_beyond_the_limits_is_clipped_and_noted() -> None:
    plan = NodeBaseline.from_fields(plan_hash([900.0] * 4 + [-900.0] * 4))
    sized = size_node(NodeAvailability.from_fields("f", aggregate()), plan, T0, 3600, 2)
    assert sized.baseline_mw == (0.5, -0.4) and any("clipped" in n for n in sized.notes)


def test_without_a_deviation_worth_making_the_bid_is_zero_the_fleet_keeps_its_plan() -> None:
    """What the fleet does anyway is not sold: energy worth nothing, cycling costs, so nothing is offered."""
    run = node_inputs(planned_kw=[100.0] * 96)  # 0.6 MWh over the horizon, within the 0.8 MWh held
    bid = bid_for(run, energy_forecast([0.0] * 6, std=0.0), None)
    assert [b.quantity_mw for b in bid.intervals[0].bands] == [0.0]


def test_the_curve_is_the_deviation_from_the_baseline() -> None:
    """The same fleet with and without a plan: the node's curve is the battery's curve less the baseline."""
    mean = [30.0, 80.0, 20.0, 90.0, 40.0, 60.0]
    planned = node_inputs(planned_kw=[200.0] * 96)  # 0.2 MW discharge planned in every interval
    bid = bid_for(planned, energy_forecast(mean), None).intervals[0]
    quantities = [b.quantity_mw for b in bid.bands]
    assert min(quantities) >= -0.4 - 0.2 - 1e-4 and max(quantities) <= 0.5 - 0.2 + 1e-4
    assert bid_for(planned, energy_forecast(mean), None).note == ""


def test_node_inputs_round_trip_through_their_artifact_and_notes_reach_the_bid() -> None:
    run = node_inputs(sizing_coverage=0.5)
    made = artifact("inputs", run)
    assert value_of(made.body) == run
    assert artifact("inputs", value_of(made.body)).artifact_id == made.artifact_id
    bid = bid_for(run, energy_forecast([30.0, 80.0, 20.0, 90.0, 40.0, 60.0]), None)
    assert "coverage 50% below 90%" in bid.note


def test_an_old_inputs_artifact_without_the_node_fields_still_reads() -> None:
    old = {"__type__": "RunInputs", "asset_id": "battery", "region": "DE", "interval_start": T0.isoformat(),
           "step_s": 3600, "horizon_steps": 24, "power_mw": 1.0, "energy_mwh": 2.0, "soc_mwh": 1.0,
           "round_trip": 0.9, "degradation_eur_per_mwh": 1.0}
    run = value_of(json.dumps(old))
    assert run.baseline_mw == () and run.charge_power_mw is None and run.baseline() is None


kw = st.floats(min_value=0.0, max_value=2000.0, allow_nan=False)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(discharge=kw, charge=kw, energy=kw, headroom=kw,
       coverage=st.floats(min_value=0.05, max_value=1.0),
       planned=st.lists(st.floats(min_value=-3000.0, max_value=3000.0, allow_nan=False), min_size=24,
                        max_size=24),
       mean=st.lists(st.floats(min_value=-100.0, max_value=300.0, allow_nan=False), min_size=4, max_size=4),
       std=st.floats(min_value=0.0, max_value=50.0))
def test_bids_never_exceed_the_flexibility_around_the_baseline(
        discharge: float, charge: float, energy: float, headroom: float, coverage: float,
        planned: list[float], mean: list[float], std: float) -> None:
    """At any price the node's total (baseline + cleared) stays within its derated limits."""
    fields = aggregate(coverage, discharge, charge, energy, headroom)
    sized = size_node(NodeAvailability.from_fields("f", fields), NodeBaseline.from_fields(plan_hash(planned)),
                      T0, 3600, 4)
    derate = 1.0 if coverage >= 0.9 else coverage
    assert sized.power_mw <= discharge * derate / 1000 + 1e-4
    assert sized.charge_mw <= charge * derate / 1000 + 1e-4
    assert (coverage < 0.9) == any("derated" in n for n in sized.notes)
    assert all(-sized.charge_mw <= b <= sized.power_mw for b in sized.baseline_mw)
    run = RunInputs("node:f", "DE", T0, 3600, 4, sized.power_mw, sized.energy_mwh, sized.soc_mwh,
                    charge_power_mw=sized.charge_mw, baseline_mw=sized.baseline_mw, notes=sized.notes)
    curve = bid_for(run, PriceForecast(ENERGY, T0, 3600, tuple(mean), (std,) * 4, T0), None).intervals[0]
    base = sized.baseline_mw[0]
    for band in curve.bands:
        total = base + band.quantity_mw
        assert -sized.charge_mw - 2e-4 <= total <= sized.power_mw + 2e-4


def test_a_cleared_quantity_becomes_the_node_total_under_an_id_of_node_and_interval() -> None:
    order = dispatch_for("feeder-0-0", T0, HOUR, cleared_mw=0.25, baseline_mw=0.1)
    assert order is not None and order.target_kw == pytest.approx(350.0)
    assert (order.start, order.end, order.node_id) == (T0, T0 + HOUR, "feeder-0-0")
    assert order.dispatch_id == dispatch_id("feeder-0-0", T0) == "bid.feeder-0-0.20261201T0600Z"
    assert dispatch_for("feeder-0-0", T0, HOUR, cleared_mw=0.0, baseline_mw=0.1) is None
    long_id = dispatch_id("x" * 80 + ":/weird", T0)
    assert DISPATCH_ID.match(long_id) and DISPATCH_ID.match(dispatch_id("a b/c", T0))
    assert long_id == dispatch_id("x" * 80 + ":/weird", T0) != dispatch_id("y" * 80, T0)


def test_the_baseline_changes_nothing_for_a_single_battery() -> None:
    run = replace(node_inputs(), asset_id="battery", baseline_mw=(), notes=(), charge_power_mw=None)
    assert run.baseline() is None
    mean = [30.0, 80.0, 20.0, 90.0, 40.0, 60.0]
    assert not math.isnan(bid_for(run, energy_forecast(mean), None).intervals[0].bands[0].quantity_mw)
    assert np.isfinite(run.battery().charge_limit_mw)
