"""The plan desk (the plans dataflow's state), without Bytewax: what it answers and when."""

from __future__ import annotations

import math
import pickle
from typing import Any

import numpy as np

from schemas.times import from_epoch_ms
from siteplan.aggregate import SiteLimits
from siteplan.desk import DeskConfig, PlanDesk, rejection_kind

STEP = 15 * 60_000
NOW = 1_800_000_000_000 - 1_800_000_000_000 % STEP + 60_000  # a minute into an interval
LIMITS = SiteLimits(capacity_kwh=10.0, max_charge_kw=5.0, max_discharge_kw=5.0, reserve_pct=20.0)
CHAIN = (("electrical", "feeder-1"), ("electrical", "region-1"), ("program", "program-1"))


def _plan(site: str, plan_id: str, issued_ms: int, power: list[float], forecast_ms: int | None = NOW,
          start_ms: int = NOW - NOW % STEP) -> dict[str, Any]:
    return {"site_id": site, "plan_id": plan_id, "issued_at": from_epoch_ms(issued_ms),
            "start": from_epoch_ms(start_ms), "interval_minutes": 15, "power_kw": power,
            "forecast_issued_at": None if forecast_ms is None else from_epoch_ms(forecast_ms)}


def _desk(**config: Any) -> PlanDesk:
    desk = PlanDesk(DeskConfig(steps=4, **config))
    desk.on_site("a", LIMITS, CHAIN)
    desk.on_site("b", LIMITS, CHAIN[:2])
    return desk


def test_a_plan_that_arrives_before_its_site_waits_for_it_and_is_refused_only_after_the_grace() -> None:
    desk = PlanDesk(DeskConfig(steps=4, unknown_grace_ms=60_000))
    assert desk.on_plan(_plan("a", "a1", NOW, [1.0] * 4), NOW, tag="origin-a") is None
    assert desk.on_plan(_plan("x", "x1", NOW, [1.0] * 4), NOW, tag="origin-x") is None
    taken = desk.on_site("a", LIMITS, CHAIN)
    assert [(t.outcome.outcome, t.tag) for t in taken] == [("new", "origin-a")]
    assert desk.expire(NOW + 59_000) == []
    (refused,) = desk.expire(NOW + 60_000)
    assert refused.outcome.outcome == "rejected" and refused.tag == "origin-x"
    assert refused.outcome.reason is not None and rejection_kind(refused.outcome.reason) == "UNKNOWN_SITE"


def test_answers_only_nodes_whose_plan_changed_and_an_emptied_node_once_more() -> None:
    desk = _desk()
    desk.on_plan(_plan("a", "a1", NOW, [1.0, 2.0, 3.0, 4.0]), NOW)
    first = {a.node_id: a for a in desk.emit(NOW).nodes}
    assert set(first) == {"feeder-1", "region-1", "program-1"}
    assert first["feeder-1"].plan.expected_sites == 2 and list(first["feeder-1"].plan.coverage) == [0.5] * 4
    assert desk.emit(NOW + 1000).nodes == []  # nothing changed
    desk.on_plan(_plan("b", "b1", NOW, [-1.0] * 4), NOW)
    changed = {a.node_id for a in desk.emit(NOW + 2000).nodes}
    assert changed == {"feeder-1", "region-1"}  # b is in no program
    desk.on_site("a", None, ())  # retired
    answers = {a.node_id: a for a in desk.emit(NOW + 3000).nodes}
    assert answers["program-1"].plan.expected_sites == 0 and not answers["program-1"].plan.planned_kw.any()
    assert "program-1" not in {a.node_id for a in desk.emit(NOW + STEP).nodes}  # answered once, then gone


def test_an_offline_sites_plan_is_carried_and_an_older_status_never_overrides_a_newer_one() -> None:
    desk = _desk()
    desk.on_plan(_plan("a", "a1", NOW, [1.0] * 4), NOW)
    desk.on_plan(_plan("b", "b1", NOW, [2.0] * 4), NOW)
    desk.on_status("a", "OFFLINE", NOW - 1000)
    desk.on_status("a", "ONLINE", NOW - 2000)  # older: ignored
    feeder = next(a for a in desk.emit(NOW).nodes if a.node_id == "feeder-1").plan
    assert list(feeder.planned_kw) == [2.0] * 4 and list(feeder.estimate_kw) == [3.0] * 4
    assert list(feeder.carried_sites) == [1] * 4 and list(feeder.planned_sites) == [1] * 4


def test_history_is_written_at_its_own_cadence_and_stale_plans_are_counted() -> None:
    desk = _desk(history_interval_ms=60_000, stale_after_ms=3_600_000)
    desk.on_plan(_plan("a", "a1", NOW, [1.0] * 4, forecast_ms=NOW - 7_200_000), NOW)
    first = desk.emit(NOW)
    assert first.rows == [] and first.nodes  # live now, history later
    desk.on_plan(_plan("b", "b1", NOW, [1.0] * 4), NOW)
    assert desk.emit(NOW + 30_000).rows == []
    rows = desk.emit(NOW + 60_000).rows
    feeder_rows = [r for r in rows if r.node_id == "feeder-1"]
    assert len(feeder_rows) == 4 and all(r.stale_sites == 1 and r.planned_kw == 2.0 for r in feeder_rows)
    assert [r.interval_start for r in feeder_rows] == [from_epoch_ms(NOW - NOW % STEP + k * STEP)
                                                        for k in range(4)]


def test_the_grid_moves_with_the_clock_and_the_state_survives_a_snapshot() -> None:
    desk = _desk()
    desk.on_plan(_plan("a", "a1", NOW, [1.0, 2.0, 3.0, 4.0]), NOW)
    desk.on_plan(_plan("z", "z1", NOW, [1.0] * 4), NOW, tag="t")  # waiting for its site
    desk.emit(NOW)
    later = {a.node_id: a for a in desk.emit(NOW + STEP).nodes}["feeder-1"].plan
    assert list(later.planned_kw) == [2.0, 3.0, 4.0, 0.0] and list(later.planned_sites) == [1, 1, 1, 0]
    restored = PlanDesk(desk.config, pickle.loads(pickle.dumps(desk.state())))
    restored.on_site("a", LIMITS, CHAIN)
    restored.on_site("b", LIMITS, CHAIN[:2])
    again = {a.node_id: a for a in restored.emit(NOW + STEP).nodes}["feeder-1"].plan
    assert np.array_equal(again.planned_kw, later.planned_kw)
    assert [t.tag for t in restored.on_site("z", LIMITS, CHAIN)] == ["t"]
    replayed = restored.on_plan(_plan("a", "a1", NOW, [1.0, 2.0, 3.0, 4.0]), NOW)
    assert replayed is not None and replayed.outcome.outcome == "replayed" and replayed.accepted is None


def test_checking_plans_at_once_gives_check_plans_own_answers() -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from siteplan.aggregate import Plan, check_plan, check_plans

    power = st.floats(-8.0, 8.0) | st.sampled_from([math.nan, math.inf, -math.inf])
    limits = st.builds(SiteLimits, st.sampled_from([5.0, 10.0]), st.sampled_from([3.0, 5.0]),
                       st.sampled_from([3.0, 5.0]), st.sampled_from([0.0, 20.0, 50.0]))
    case = st.tuples(st.lists(power, min_size=0, max_size=6), st.sampled_from([0, 15, 30]),
                     st.none() | limits, st.none() | st.floats(0.0, 100.0))

    @settings(max_examples=200, deadline=None)
    @given(st.lists(case, min_size=1, max_size=12))
    def same(cases: list[Any]) -> None:
        plans = [Plan(f"s{i}", f"p{i}", 0, 0, minutes, tuple(p))
                 for i, (p, minutes, _, _) in enumerate(cases)]
        held = [c[2] for c in cases]
        socs = [c[3] for c in cases]
        assert check_plans(plans, held, socs) == [check_plan(p, lim, soc)
                                                  for p, lim, soc in zip(plans, held, socs, strict=True)]

    same()


def test_after_a_change_it_aggregates_once_the_input_pauses_or_an_interval_after_the_last() -> None:
    desk = _desk()
    grid_moves = NOW - NOW % STEP + STEP
    assert desk.next_due_ms(NOW, 1000, NOW + 50, 100) == NOW + 150  # registrations changed sites
    desk.emit(NOW)
    assert desk.next_due_ms(NOW, 1000, NOW + 50, 100) == min(grid_moves, NOW + 60_000)  # no change: history
    desk.on_plan(_plan("a", "a1", NOW, [1.0] * 4), NOW + 200)
    assert desk.next_due_ms(NOW, 1000, NOW + 200, 100) == NOW + 300  # a burst ended: a pause suffices
    assert desk.next_due_ms(NOW, 1000, NOW + 950, 100) == NOW + 1000  # input kept coming: the interval
    assert desk.next_due_ms(NOW, 1000, NOW - 500, 100) == NOW + 100  # at least the pause after the last
    assert desk.next_due_ms(NOW, 1000) == NOW + 1000  # no pause known (just restored)
