"""Herding: identical price signals make a feeder peak; the platform's signal or cap holds the limit."""

from __future__ import annotations

import numpy as np

from siteplan.central import plan_fleet
from siteplan.feeder import coordinate, import_caps
from siteplan.planner import Battery, PlanInputs, plan_site

STEPS = 96


def _fleet(n: int, seed: int = 0) -> list[PlanInputs]:
    rng = np.random.default_rng(seed)
    t = np.arange(STEPS)
    prices = 80 + 50 * np.sin(2 * np.pi * t / 48) + rng.normal(0, 10, STEPS)  # one region: same prices
    return [PlanInputs(Battery(rng.uniform(5, 15), 5, 5, 20, rng.uniform(20, 100)), prices,
                       0.3 + rng.random(STEPS),
                       np.maximum(0, rng.uniform(0, 5) * np.sin((t - 24) / 48 * np.pi)))
            for _ in range(n)]


def test_plans_herd_into_a_new_peak_and_coordination_holds_the_feeder_limit() -> None:
    sites = _fleet(20)
    idle_peak = float(np.max(sum(np.maximum(s.load_kw - s.solar_kw, 0.0) for s in sites)))
    planned_peak = float(np.max(np.sum([plan_site(s).grid_kw for s in sites], axis=0)))
    assert planned_peak > 1.5 * idle_peak  # herding: the plans alone make a new feeder peak
    limit = 1.1 * idle_peak
    result = coordinate(sites, limit, rounds=4)
    assert result.overshoot_kw == 0.0
    assert float(np.max(result.feeder_import_kw)) <= limit + 1e-6
    central = plan_fleet(sites, limit)
    assert central.cost <= result.cost + 1e-6  # the central optimum is a lower bound


def test_import_caps_sum_to_the_limit_and_leave_idle_feasible() -> None:
    sites = _fleet(10, seed=1)
    idle_sum = np.sum([np.maximum(s.load_kw - s.solar_kw, 0.0) for s in sites], axis=0)
    limit = float(idle_sum.max()) * 1.2
    caps = import_caps(sites, limit)
    np.testing.assert_allclose(np.sum(caps, axis=0), np.maximum(limit, idle_sum))
    for site, cap in zip(sites, caps, strict=True):
        assert np.all(cap >= np.maximum(site.load_kw - site.solar_kw, 0.0))
