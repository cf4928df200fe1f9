"""``vpp bench peak --quick`` reports the design's figures (slow: ~20 s; run with ``-m slow``)."""

from __future__ import annotations

import json

import pytest

from bench import peak

pytestmark = pytest.mark.slow


def test_quick_run_reports_the_figures_with_no_rebound() -> None:
    figures = peak.run(quick=True)
    for key in ("monthly_peak_reduction_pct", "perfect_foresight_reduction_pct", "rebound_days",
                "plan_s_per_day"):
        assert key in figures, key
    assert figures["rebound_days"] == 0 and figures["months_worse_than_nothing"] == 0
    assert 0 < figures["monthly_peak_reduction_pct"] <= figures["perfect_foresight_reduction_pct"] + 1e-9
    assert figures["monthly_peak_reduction_pct"] > figures["daily_threshold_only_reduction_pct"]
    months = json.loads((peak.RESULTS_DIR / "peak-months.json").read_text())
    assert {len(months[f"simbench:{feeder}"]) for feeder in peak.FEEDERS} == {3}  # 90 days: Jan-Mar
