"""``vpp bench allocation``: time to split a target across 10,000 and 100,000 sites.

Baseline in the same run: the proportional split without limits (one vector
operation), which is what water-filling costs on top of. ``dispatch_e2e_ms_10k``
runs the real control dataflow on a private stack (:mod:`bench.dispatch_e2e`), with
the bare Kafka round trip as its baseline.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from functools import partial

import numpy as np

from bench import dispatch_e2e
from operators.allocation import Array, Fleet, qp_allocate, waterfill


def _fleet(n: int, seed: int = 0) -> Fleet:
    rng = np.random.default_rng(seed)
    return Fleet(
        max_discharge_kw=rng.choice([3.0, 5.0, 7.0], n), max_charge_kw=rng.choice([3.0, 5.0], n),
        energy_available_kwh=rng.uniform(0.0, 12.0, n), headroom_kwh=rng.uniform(0.0, 12.0, n),
        eligible=rng.random(n) > 0.05, solar_surplus_kw=rng.uniform(0.0, 4.0, n),
    )


def _proportional(weights: Array, target: float) -> Array:
    scaled: Array = weights * (target / float(weights.sum()))
    return scaled


def _median_ms(run: Callable[[], object], repeats: int) -> float:
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings)


def run(quick: bool) -> dict[str, float]:
    """Measure and return the figures."""
    repeats = 5 if quick else 20
    figures: dict[str, float] = {}
    for n, label in ((10_000, "10k"), (100_000, "100k")):
        fleet = _fleet(n)
        target = 0.6 * float(fleet.limits_kw(True, 0.5).sum())  # a 2 MW-class target on 10k sites
        figures[f"waterfill_ms_{label}"] = _median_ms(partial(waterfill, fleet, target, 0.5), repeats)
        figures[f"proportional_baseline_ms_{label}"] = _median_ms(
            partial(_proportional, fleet.weights(True), target), repeats)
    fleet = _fleet(10_000)
    target = 0.6 * float(fleet.limits_kw(True, 0.5).sum())
    figures["qp_ms_10k"] = _median_ms(partial(qp_allocate, fleet, target, 0.5), 1 if quick else 3)
    figures.update(dispatch_e2e.measure(rounds=1 if quick else 3))
    return figures
