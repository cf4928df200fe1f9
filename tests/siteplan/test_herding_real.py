"""Herding on real shapes: SMARD prices, SimBench household loads and PV (the pinned data sets).

Every site of a region gets the same price curve, so their own plans pile onto the
same cheap quarters and make a feeder peak that idle homes never make; the
platform's response (feeder signal, then caps) keeps the feeder under its limit at
a bill close to the central optimum with the limit.
"""

from __future__ import annotations

import numpy as np

from bench.plans import real_sites
from siteplan.central import plan_fleet
from siteplan.feeder import coordinate
from siteplan.planner import plan_site


def test_plans_on_real_shapes_make_a_new_feeder_peak_and_the_platform_response_prevents_it() -> None:
    sites = real_sites(40, seed=3)
    idle = np.sum([np.maximum(s.load_kw - s.solar_kw, 0.0) for s in sites], axis=0)
    planned = np.sum([plan_site(s).grid_kw for s in sites], axis=0)
    assert planned.max() > 1.3 * idle.max()  # a new feeder peak from the plans alone

    limit = 1.1 * float(idle.max())
    result = coordinate(sites, limit, rounds=4)
    assert result.overshoot_kw == 0.0
    assert result.feeder_import_kw.max() <= limit + 1e-6
    central = plan_fleet(sites, limit)
    gap = (result.cost - central.cost) / abs(central.cost)
    assert -1e-6 <= gap <= 0.18  # no better than the optimum; within the literature's 18 %
