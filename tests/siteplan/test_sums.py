"""Node sums kept by differences (siteplan.sums) against the brute-force aggregate, through the desk.

The contract is :func:`siteplan.aggregate.aggregate` (a full sum of the latest
plans): after any sequence of new, replayed, late, replacing plans, statuses
(in and out of order), re-placed and retired sites and time passing (plans
turning stale, the grid moving), what the desk has answered per node equals it,
and the incrementally kept integer sums equal a fresh computation exactly.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import siteplan.aggregate
from schemas.times import from_epoch_ms
from siteplan.aggregate import NodePlan, SiteLimits, aggregate
from siteplan.desk import DeskConfig, NodeAnswer, PlanDesk
from siteplan.sums import NodeSums

STEP = 15 * 60_000
T0 = 1_800_000_000_000 - 1_800_000_000_000 % STEP + 60_000  # a minute into an interval
STEPS = 4
LIMITS = SiteLimits(capacity_kwh=10.0, max_charge_kw=5.0, max_discharge_kw=5.0, reserve_pct=20.0)
CHAINS = (
    (("electrical", "feeder-1"), ("electrical", "region-1"), ("program", "program-1")),
    (("electrical", "feeder-2"), ("electrical", "region-1")),
    (("electrical", "feeder-3"), ("electrical", "region-2"), ("program", "program-1")),
    (("geographic", "postcode-1"),),
)
SITES = ("a", "b", "c", "d", "e")
CONFIG = DeskConfig(steps=STEPS, stale_after_ms=30 * 60_000)


def _record(site: str, plan_id: str, issued_ms: int, power: list[float], forecast_ms: int | None,
            start_ms: int) -> dict[str, Any]:
    return {"site_id": site, "plan_id": plan_id, "issued_at": from_epoch_ms(issued_ms),
            "start": from_epoch_ms(start_ms), "interval_minutes": 15, "power_kw": power,
            "forecast_issued_at": None if forecast_ms is None else from_epoch_ms(forecast_ms)}


power = st.lists(st.integers(-3000, 3000).map(lambda v: v / 1000), min_size=1, max_size=STEPS + 2)
plan_event = st.tuples(st.just("plan"), st.sampled_from(SITES), st.integers(0, 5), st.integers(-40, 40),
                       power, st.sampled_from([None, 0, 20, 90]), st.integers(-2, 1))
replay_event = st.tuples(st.just("replay"), st.integers(0, 1000))
status_event = st.tuples(st.just("status"), st.sampled_from(SITES), st.booleans(), st.integers(-20, 20))
place_event = st.tuples(st.just("place"), st.sampled_from(SITES), st.integers(-1, len(CHAINS) - 1))
time_event = st.tuples(st.just("emit"), st.integers(0, 20 * 60_000))
events = st.lists(st.one_of(plan_event, replay_event, status_event, place_event, time_event), max_size=40)


def _brute_force(desk: PlanDesk, now_ms: int) -> dict[str, NodePlan]:
    members = {site: nodes for site, nodes in desk.intake.ancestors.items() if nodes}
    return aggregate(desk.intake.book, members, desk.intake.online, desk.config.grid_start(now_ms), STEPS,
                     stale_before_ms=now_ms - CONFIG.stale_after_ms)


def _same(got: NodePlan, want: NodePlan) -> bool:
    return (got.start_ms == want.start_ms and got.expected_sites == want.expected_sites
            and got.stale_sites == want.stale_sites
            and np.allclose(got.planned_kw, want.planned_kw, rtol=0, atol=1e-9)
            and np.allclose(got.estimate_kw, want.estimate_kw, rtol=0, atol=1e-9)
            and np.array_equal(got.planned_sites, want.planned_sites)
            and np.array_equal(got.carried_sites, want.carried_sites))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events)
# A site moved to another feeder as the grid moves on: its old feeder answers once more, empty.
@example([("plan", "a", 0, 0, [0.0], None, 0), ("emit", 0), ("place", "a", 1), ("emit", 14 * 60_000)])
def test_what_the_desk_answers_by_differences_equals_the_brute_force_sum(script: list[Any]) -> None:
    desk = PlanDesk(CONFIG)
    for i, site in enumerate(SITES[:4]):
        desk.on_site(site, LIMITS, CHAINS[i])
    now = T0
    live: dict[str, NodeAnswer] = {}
    sent: list[dict[str, Any]] = []
    for event in script:
        kind = event[0]
        if kind == "plan":
            _, site, n, issued, values, forecast_age, start = event
            record = _record(site, f"{site}-{n}", now + issued * 60_000, values,
                             None if forecast_age is None else now - forecast_age * 60_000,
                             now - now % STEP + start * STEP)
            sent.append(record)
            desk.on_plan(record, now)
        elif kind == "replay" and sent:
            desk.on_plan(sent[event[1] % len(sent)], now)
        elif kind == "status":
            _, site, online, at = event
            desk.on_status(site, "ONLINE" if online else "OFFLINE", now + at * 60_000)
        elif kind == "place":
            _, site, chain = event
            desk.on_site(site, None if chain < 0 else LIMITS, () if chain < 0 else CHAINS[chain])
        elif kind == "emit":
            now += event[1]
            live.update((a.node_id, a) for a in desk.emit(now).nodes)
    live.update((a.node_id, a) for a in desk.emit(now).nodes)

    reference = _brute_force(desk, now)
    for node_id, want in reference.items():
        assert _same(live[node_id].plan, want), node_id
    for node_id in set(live) - set(reference):  # lost its last member: answered empty
        assert live[node_id].plan.expected_sites == 0 and not live[node_id].plan.estimate_kw.any()

    fresh = NodeSums(STEPS, 15, CONFIG.stale_after_ms)
    fresh.reset(desk.config.grid_start(now))
    fresh.apply({site: desk._member(site) for site in desk.intake.ancestors}, now)
    for node_id in reference:
        assert fresh.signature(node_id) == desk.sums.signature(node_id), "integer sums drifted"


def test_a_plan_turns_stale_as_time_passes_without_any_new_input() -> None:
    desk = PlanDesk(CONFIG)
    desk.on_site("a", LIMITS, CHAINS[0])
    desk.on_plan(_record("a", "a1", T0, [1.0] * STEPS, T0 - 20 * 60_000, T0 - T0 % STEP), T0)
    assert {a.plan.stale_sites for a in desk.emit(T0).nodes} == {0}
    desk.on_site("b", LIMITS, CHAINS[3])  # any change: the desk aggregates again
    later = T0 + 11 * 60_000  # the forecast is 31 minutes old now: beyond the 30 allowed
    answers = {a.node_id: a.plan for a in desk.emit(later).nodes}
    assert answers["feeder-1"].stale_sites == 1


def test_an_aggregation_after_one_new_plan_places_only_that_sites_plans(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """O(change): one site's new plan among 200 costs its own old and new plan, not the fleet's."""
    desk = PlanDesk(CONFIG)
    for i in range(200):
        site = f"site-{i}"
        desk.on_site(site, LIMITS, CHAINS[i % len(CHAINS)])
        desk.on_plan(_record(site, f"{site}-1", T0, [0.5] * STEPS, T0, T0 - T0 % STEP), T0)
    desk.emit(T0)
    placed: list[int] = []
    real_matrix = siteplan.aggregate.plan_matrix
    real_difference = NodeSums._difference

    def matrix(plans: Any, *args: Any) -> Any:  # how a full aggregate places plans
        placed.append(sum(p is not None for p in plans))
        return real_matrix(plans, *args)

    def difference(sums: NodeSums, change: Any, contributions: Any) -> Any:  # how the sums place them
        placed.append(sum(m.plan is not None for m, _, _ in contributions))
        return real_difference(sums, change, contributions)

    monkeypatch.setattr(siteplan.aggregate, "plan_matrix", matrix)
    monkeypatch.setattr(NodeSums, "_difference", difference)
    desk.on_plan(_record("site-7", "site-7-2", T0 + 1000, [1.5] * STEPS, T0, T0 - T0 % STEP), T0 + 1000)
    answers = {a.node_id: a.plan for a in desk.emit(T0 + 1000).nodes}
    assert sum(placed) <= 2, f"placed {placed} plans for one changed site"
    assert set(answers) == {node for _, node in CHAINS[7 % len(CHAINS)]}
    assert answers["postcode-1"].planned_kw.tolist() == [0.5 * 49 + 1.5] * STEPS  # 50 sites there
