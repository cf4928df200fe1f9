"""Plan aggregation against a brute-force sum of the latest plans, and the plan checks."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from siteplan.aggregate import MINUTE_MS, Plan, PlanBook, SiteLimits, aggregate, check_plan

Q = 15 * MINUTE_MS
T0 = 1_796_083_200_000  # 2026-12-01T00:00Z


def fleet(seed: int, n_sites: int) -> dict[str, tuple[str, ...]]:
    """Sites under feeders > substations (electrical) and postcodes > states (geographic) and a program."""
    rng = random.Random(seed)
    out: dict[str, tuple[str, ...]] = {}
    for i in range(n_sites):
        feeder = rng.randrange(6)
        postcode = rng.randrange(4)
        chain: tuple[str, ...] = (f"feeder-{feeder}", f"sub-{feeder // 3}", "region-0", f"pc-{postcode}",
                                  f"state-{postcode // 2}")
        out[f"site-{i}"] = (*chain, "program-0") if rng.random() < 0.5 else chain
    return out


@dataclass
class Expected:
    planned: list[float]
    estimate: list[float]
    n: list[int]
    carried: list[int]
    expected: int = 0
    stale: int = 0


def brute_force(offered: list[Plan], members: dict[str, tuple[str, ...]], online: set[str],
                start_ms: int, steps: int, stale_before_ms: int) -> dict[str, Expected]:
    """The latest plan per site by (issued_at, plan_id), summed node by node and interval by interval."""
    latest: dict[str, Plan] = {}
    for plan in offered:
        held = latest.get(plan.site_id)
        if held is None or (plan.issued_at_ms, plan.plan_id) > (held.issued_at_ms, held.plan_id):
            latest[plan.site_id] = plan
    nodes: dict[str, Expected] = {}
    for site, ancestors in members.items():
        for node in ancestors:
            agg = nodes.setdefault(node, Expected([0.0] * steps, [0.0] * steps, [0] * steps, [0] * steps))
            agg.expected += 1
            found = latest.get(site)
            if found is None:
                continue
            if found.forecast_issued_at_ms is None or found.forecast_issued_at_ms < stale_before_ms:
                agg.stale += 1
            for k in range(steps):
                value = found.value_at(start_ms + k * Q)
                if value is None:
                    continue
                agg.estimate[k] += value
                if site in online:
                    agg.planned[k] += value
                    agg.n[k] += 1
                else:
                    agg.carried[k] += 1
    return nodes


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 40), st.floats(0.0, 0.5))
def test_aggregation_equals_brute_force_with_offline_late_and_replayed_plans(seed: int, n_sites: int,
                                                                            offline_share: float) -> None:
    rng = random.Random(seed)
    members = fleet(seed, n_sites)
    offered: list[Plan] = []
    for site in members:
        if rng.random() < 0.15:
            continue  # never planned: counts in expected only
        for version in range(rng.randrange(1, 4)):
            start = T0 + rng.randrange(-4, 4) * Q
            steps = rng.randrange(1, 97)
            offered.append(Plan(site, f"{site}-{version}", T0 + version * Q + rng.randrange(1000), start, 15,
                                tuple(rng.uniform(-5, 5) for _ in range(steps)),
                                rng.choice([None, T0 - Q, T0 + Q])))
    # Late arrivals and replays: shuffle the stream, then replay a sample of it.
    stream = offered[:]
    rng.shuffle(stream)
    stream += rng.sample(offered, len(offered) // 3)
    book = PlanBook()
    outcomes = [book.offer(p) for p in stream]
    assert outcomes.count("new") == len({p.site_id for p in offered})
    online = {s for s in members if rng.random() >= offline_share}
    steps = 96
    got = aggregate(book, members, online, T0, steps, stale_before_ms=T0)
    want = brute_force(offered, members, online, T0, steps, T0)
    assert set(got) == set(want)
    for node, agg in got.items():
        ref = want[node]
        np.testing.assert_allclose(agg.planned_kw, ref.planned, atol=1e-9)
        np.testing.assert_allclose(agg.estimate_kw, ref.estimate, atol=1e-9)
        assert agg.planned_sites.tolist() == ref.n
        assert agg.carried_sites.tolist() == ref.carried
        assert agg.expected_sites == ref.expected
        assert agg.stale_sites == ref.stale
        assert np.all(agg.coverage <= 1.0)


def test_replay_is_idempotent_and_a_late_plan_never_replaces_a_newer_one() -> None:
    book = PlanBook()
    old = Plan("s", "a", T0, T0, 15, (1.0,))
    new = Plan("s", "b", T0 + Q, T0 + Q, 15, (2.0,))
    assert [book.offer(new), book.offer(old), book.offer(new)] == ["new", "late", "replayed"]
    assert book.plans["s"] is new


LIMITS = SiteLimits(capacity_kwh=10.0, max_charge_kw=5.0, max_discharge_kw=4.0, reserve_pct=20.0)


@pytest.mark.parametrize(("plan", "limits", "soc", "reason"), [
    (Plan("x", "p", T0, T0, 15, (1.0,)), None, None, "unknown site"),
    (Plan("s", "p", T0, T0, 15, (1.0, math.nan)), LIMITS, None, "non-finite"),
    (Plan("s", "p", T0, T0, 15, (4.5,)), LIMITS, None, "beyond the site's limits"),
    (Plan("s", "p", T0, T0, 15, (-5.5,)), LIMITS, None, "beyond the site's limits"),
    (Plan("s", "p", T0, T0, 15, (4.0,) * 10), LIMITS, None, "above the site's reserve"),
    (Plan("s", "p", T0, T0, 15, (4.0,) * 4), LIMITS, 40.0, "below the site's reserve"),
    (Plan("s", "p", T0, T0, 0, (1.0,)), LIMITS, None, "no intervals"),
])
def test_bad_plans_are_refused_with_a_reason(plan: Plan, limits: SiteLimits | None, soc: float | None,
                                             reason: str) -> None:
    found = check_plan(plan, limits, soc)
    assert found is not None and reason in found


def test_a_plan_from_the_planner_passes_the_check() -> None:
    from siteplan.planner import Battery, PlanInputs, plan_site

    rng = np.random.default_rng(3)
    battery = Battery(10.0, 5.0, 4.0, 20.0, 60.0)
    result = plan_site(PlanInputs(battery, 80 + rng.normal(0, 60, 96), 0.5 + rng.random(96), np.zeros(96)))
    plan = Plan("s", "p", T0, T0, 15, tuple(result.power_kw.tolist()))
    assert check_plan(plan, LIMITS, 60.0) is None
    assert check_plan(plan, LIMITS) is None
