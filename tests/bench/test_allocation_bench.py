"""The allocation benchmark reports the design's figures (quick run; the end-to-end part starts a stack)."""

from __future__ import annotations

import pytest

from bench import allocation

pytestmark = pytest.mark.integration


def test_quick_run_reports_timings_for_every_allocator() -> None:
    figures = allocation.run(quick=True)
    for key in ("waterfill_ms_10k", "waterfill_ms_100k", "qp_ms_10k", "proportional_baseline_ms_10k",
                "dispatch_e2e_ms_10k", "kafka_round_trip_baseline_ms"):
        assert figures[key] > 0, key
