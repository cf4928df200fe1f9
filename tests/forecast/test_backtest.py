"""The rolling-origin harness: no look-ahead (and it catches a model that looks), error by horizon."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import pytest

from forecast import backtest
from forecast.models import Forecast, HoltWinters, SeasonalNaive
from forecast.series import Array, Series
from tests.forecast.conftest import seasonal_series


@dataclass
class _PeekFit:
    target: Array

    def forecast(self, history: Series, horizon: int) -> Forecast:
        n = len(history)
        return Forecast(n, self.target[n: n + horizon].copy(), np.ones(horizon), "peeking")


@dataclass
class PeekingModel:
    """A leak as it happens in real code: a feature built from the full series, here the target itself."""

    target: Array
    name: str = "peeking"

    def fit(self, history: Series) -> _PeekFit:
        return _PeekFit(self.target)


def test_the_harness_catches_a_model_that_sees_the_target() -> None:
    series = seasonal_series(weeks=4)
    plan = backtest.Plan.daily(series, 5, 24)
    with pytest.raises(backtest.LookAheadError, match=r"peeking.*moved by up to .* it sees the future"):
        backtest.run(series, PeekingModel(series.values), plan)
    np.testing.assert_array_equal(series.values, seasonal_series(weeks=4).values)  # restored


def test_honest_models_pass_the_audit_and_the_peek_would_have_looked_perfect() -> None:
    series = seasonal_series(weeks=5)
    plan = backtest.Plan.daily(series, 5, 24, refit_every=2, audits=0)
    leaked = backtest.run(series, PeekingModel(series.values), plan)
    assert np.abs(leaked.mean - leaked.actual).max() == 0  # why the audit matters
    audited = backtest.Plan.daily(series, 5, 24, refit_every=2, audits=3)
    result = backtest.run(series, HoltWinters(), audited)
    assert len(result.fit_s) == 3  # refits at origins 0, 2, 4
    assert result.mean.shape == (5, 24)


def test_errors_by_horizon_bucket_with_mase_and_rmae_against_the_naive() -> None:
    series = seasonal_series(weeks=5)
    plan = backtest.Plan.daily(series, 4, 24)
    naive = backtest.run(series, SeasonalNaive(), plan)
    rows = backtest.score(series, naive, naive, plan)
    assert [r.label for r in rows] == ["0h-1h", "1h-3h", "3h-6h", "6h-12h", "12h-24h", "all"]
    assert all(r.rmae == pytest.approx(1.0) for r in rows)
    scale = backtest.naive_scale(series, plan.origins[0])
    assert rows[-1].mase == pytest.approx(rows[-1].mae / scale)
    assert rows[-1].mape_pct is not None


def test_a_series_that_crosses_zero_never_reports_mape() -> None:
    series = seasonal_series(weeks=4, level=5.0)  # the daily swing takes it below zero
    assert backtest.crosses_zero(series)
    plan = backtest.Plan.daily(series, 3, 24)
    naive = backtest.run(series, SeasonalNaive(), plan)
    assert all(r.mape_pct is None for r in backtest.score(series, naive, naive, plan))


def test_buckets_follow_the_step() -> None:
    assert backtest.buckets_for(timedelta(minutes=15), 96) == [(1, 4), (5, 12), (13, 24), (25, 48), (49, 96)]
    assert backtest.buckets_for(timedelta(minutes=30), 48)[-1] == (25, 48)
