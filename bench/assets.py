"""``vpp bench assets``: generate and load a fleet into the registry; members-at-T for a substation.

Baseline in the same run: a brute-force scan of every edge for the same
members-at-T question, which is what the registry's per-parent index avoids.
"""

from __future__ import annotations

import statistics
import time
from datetime import UTC, datetime, timedelta

from assets.generator import generate_fleet
from assets.registry import Registry


def _brute_force_members(registry: Registry, node_id: str, at: datetime) -> set[str]:
    valid = [e for e in registry.edges if e.holds_at(at)]
    parent_of = {(e.hierarchy, e.child_id): e.parent_id for e in valid if e.hierarchy != "program"}
    found = set()
    for (hierarchy, child), direct_parent in parent_of.items():
        if not child.startswith("site-"):
            continue
        ancestor: str | None = direct_parent
        while ancestor is not None and ancestor != node_id:
            ancestor = parent_of.get((hierarchy, ancestor))
        if ancestor == node_id:
            found.add(child)
    return found


def run(quick: bool) -> dict[str, float]:
    """Measure and return the figures."""
    n_sites = 10_000 if quick else 100_000
    at = datetime(2026, 1, 1, tzinfo=UTC)
    started = time.perf_counter()
    fleet = generate_fleet(at, n_sites, seed=0)
    load_s = time.perf_counter() - started
    later = at + timedelta(days=1)
    substation = "substation-0-0"
    timings = []
    for _ in range(20):
        t = time.perf_counter()
        members = fleet.registry.members(substation, later)
        timings.append((time.perf_counter() - t) * 1000)
    t = time.perf_counter()
    region_sites = len(fleet.registry.members("region-0", later))
    region_ms = (time.perf_counter() - t) * 1000
    t = time.perf_counter()
    brute = _brute_force_members(fleet.registry, substation, later)
    brute_ms = (time.perf_counter() - t) * 1000
    if brute != members:
        raise AssertionError("registry and brute force disagree on members at T")
    return {
        "sites": float(n_sites),
        "load_sites_per_s": n_sites / load_s,
        "members_at_t_ms": statistics.median(timings),
        "members_at_t_sites": float(len(members)),
        "members_at_t_region_ms": region_ms,
        "members_at_t_region_sites": float(region_sites),
        "baseline_brute_force_members_ms": brute_ms,
    }
