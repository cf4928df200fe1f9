"""Compare dataflow results with the brute-force answer, field by field, with useful messages."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from tests.telemetry.scenario import Scenario, expected_minutes, expected_nodes

LIVE_FIELDS = (
    "expected_sites", "reporting_sites", "delayed_sites", "offline_sites", "battery_kw", "solar_kw",
    "load_kw", "grid_kw", "energy_available_kwh", "charge_headroom_kwh", "est_battery_kw",
    "est_energy_available_kwh", "est_charge_headroom_kwh",
)
SITE_MINUTE_FIELDS = ("battery_kw_mean", "battery_kw_min", "battery_kw_max", "solar_kw_mean", "soc_pct_last",
                      "samples")
NODE_MINUTE_FIELDS = ("expected_sites", "reporting_sites", "battery_kw", "battery_kw_min", "battery_kw_max",
                      "solar_kw")


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-6)


def mismatches(expected: Mapping[Any, Mapping[str, float]], actual: Mapping[Any, Any],
               fields: tuple[str, ...]) -> list[str]:
    """Every key missing, extra or differing in one of ``fields``; empty when all agree."""
    problems = [f"missing {key}" for key in expected if key not in actual]
    for key, got in actual.items():
        # A node every member has left stays, empty: all zeros is what brute force says too.
        want = expected.get(key, {})
        for name in fields:
            value = got[name] if isinstance(got, Mapping) else getattr(got, name)
            if not _close(float(value), float(want.get(name, 0.0))):
                problems.append(f"{key}.{name}: expected {want.get(name, 0.0)}, got {value}")
    return problems


def check_all(sc: Scenario, nodes: Mapping[str, Any], site_rows: Mapping[tuple[str, int], Any],
              node_rows: Mapping[tuple[str, int], Any], now_ms: int) -> list[str]:
    """Live aggregates, site minutes and node minutes against the brute-force answer."""
    want_sites, want_nodes = expected_minutes(sc, now_ms)
    return (mismatches(expected_nodes(sc, now_ms), nodes, LIVE_FIELDS)
            + mismatches(want_sites, site_rows, SITE_MINUTE_FIELDS)
            + mismatches(want_nodes, node_rows, NODE_MINUTE_FIELDS))
