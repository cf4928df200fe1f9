"""The allocation benchmark reports the design's figures (quick run; the end-to-end part starts a stack).

The allocators run at the quick run's sizes (10,000 and 100,000 sites: the keys name them). The
end-to-end part runs at test size, 500 sites and rounds half a second apart: the real control
dataflow on a private stack all the same, with its Kafka baseline, but this test proves the figures
are reported, not what they are.
"""

from __future__ import annotations

from functools import partial

import pytest

from bench import allocation, dispatch_e2e

pytestmark = pytest.mark.integration


def test_quick_run_reports_timings_for_every_allocator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dispatch_e2e, "measure", partial(dispatch_e2e.measure, sites=500))
    monkeypatch.setattr(dispatch_e2e, "RELEASE_S", 0.5)
    figures = allocation.run(quick=True)
    for key in ("waterfill_ms_10k", "waterfill_ms_100k", "qp_ms_10k", "proportional_baseline_ms_10k",
                "dispatch_e2e_ms_10k", "kafka_round_trip_baseline_ms"):
        assert figures[key] > 0, key
