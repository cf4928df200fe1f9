"""The bidding bench's policies on a synthetic price series: an oracle forecast earns what foresight does."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

from bench import bidding
from forecast.models import Fitted, Forecast
from forecast.series import Series

HOURS = 3 * 168


def prices() -> Series:
    t = np.arange(HOURS)
    values = 40 + 25 * np.sin(2 * np.pi * (t - 8) / 24) + 5 * np.sin(2 * np.pi * t / 168)
    return Series(datetime(2018, 1, 1, tzinfo=UTC), timedelta(hours=1), values)


@dataclass(frozen=True, slots=True)
class Oracle:
    """Forecasts the true future (a test double: the policy's ceiling, not a model)."""

    truth: Series
    name: str = "oracle"

    def fit(self, history: Series) -> Fitted:
        return self

    def forecast(self, history: Series, horizon: int) -> Forecast:
        n = len(history)
        return Forecast(n, self.truth.values[n:n + horizon], np.full(horizon, 1.0), self.name)


def test_bidding_on_a_perfect_forecast_earns_close_to_perfect_foresight() -> None:
    series = prices()
    perfect = bidding.perfect_week(series, 168)
    earned = bidding.bid_week(series, 168, Oracle(series))
    assert perfect > 0
    assert 0.9 * perfect <= earned <= perfect + 1e-6
