"""The plans benchmark reports the design's figures on real shapes (quick run, about 15 s: slow)."""

from __future__ import annotations

import pytest

from bench import plans

pytestmark = pytest.mark.slow


def test_quick_run_reports_plan_times_the_central_reference_and_the_coupled_gap() -> None:
    figures = plans.run(quick=True)
    for key in ("site_plan_ms", "central_lp_ms", "aggregate_10k_s", "aggregate_10k_inprocess_s",
                "aggregate_100_changes_ms", "plan_freshness_p99_s"):
        assert figures[key] > 0, key
    assert figures["local_central_gap"] <= 1e-6 * figures["central_lp_sites"]
    assert figures["coupled_gap_pct"] >= -1e-6  # the central optimum is a lower bound
    assert figures["feeder_coordinated_peak_kw"] <= figures["feeder_limit_kw"] + 1e-6
