"""The allocation benchmark reports the design's figures (quick run, well under a second here)."""

from __future__ import annotations

from bench import allocation


def test_quick_run_reports_timings_for_every_allocator() -> None:
    figures = allocation.run(quick=True)
    for key in ("waterfill_ms_10k", "waterfill_ms_100k", "qp_ms_10k", "proportional_baseline_ms_10k"):
        assert figures[key] > 0, key
