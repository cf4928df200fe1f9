"""A recorded feeder day through the real stack: the peak the plan promised is the peak node_minute measures.

40 simulated sites replay SimBench's ``lv_urban6`` feeder on 9 December 2016
(household and PV profiles scaled so their net load is the feeder, the fleet at
10% of the day's peak for 2 hours) on a clock 60 times faster than real time,
through the real telemetry and control dataflows. The peak LP plans the evening
(17:00-21:00) on the recorded day, ``run_plan`` sends it as dispatches, and
``record_day`` measures the day from ``node_minute`` (``bench/peak_loop.py``).

Slow (about four minutes): ``pytest -m slow tests/integration/test_peak_closed_loop.py``.
The same run is the closed-loop figure of ``vpp bench peak``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.peak_loop import LoopResult, LoopScenario, run
from tests.conftest import local_settings
from vpp.stack import running

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def day(tmp_path_factory: pytest.TempPathFactory) -> LoopResult:
    settings = local_settings(Path(tmp_path_factory.mktemp("peak-loop")))
    with running(settings):
        return run(settings, LoopScenario())


def test_the_measured_peak_reduction_is_within_one_point_of_the_plan(day: LoopResult) -> None:
    assert day.event.status == "completed", day.event
    assert day.planned_reduction_pct > 5.0, "the plan shaves the evening peak (fleet at 10% of it)"
    assert abs(day.gap_pct) <= 1.0, day.figures()


def test_the_recharge_makes_no_new_peak(day: LoopResult) -> None:
    assert not day.event.rebound, day.event
    assert day.event.actual_peak_kw < day.event.counterfactual_peak_kw
    assert day.event.energy_recharged_kwh > 0.8 * day.event.energy_delivered_kwh, "the fleet recharged"


def test_every_dispatch_of_the_plan_ran_to_its_end(day: LoopResult) -> None:
    assert day.dispatch_ids and set(day.statuses) == set(day.dispatch_ids)
    assert {s["state"] for s in day.statuses.values()} <= {"COMPLETED", "PARTIAL"}, day.statuses
