"""The coverage a live answer can vouch for (core.live.vouched_coverage)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from core.live import is_stale, vouched_coverage

coverages = st.floats(0.0, 1.0)
lags = st.one_of(st.none(), st.floats(-5.0, 10_000.0))
limits = st.floats(1.0, 3_600.0)


@given(coverages, lags, limits)
def test_coverage_is_kept_while_the_pipeline_is_within_the_offline_limit_and_zero_beyond(
        coverage: float, lag_s: float | None, offline_after_s: float) -> None:
    vouched = vouched_coverage(coverage, lag_s, offline_after_s)
    if lag_s is not None and lag_s > offline_after_s:
        assert vouched == 0.0 and is_stale(lag_s, offline_after_s)
    else:
        assert vouched == coverage and not is_stale(lag_s, offline_after_s)
