"""A forecast becomes one run row and one point per target, with its band and what cleaning filled."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

from forecast.clean import regularize
from forecast.models import OrNaive, SeasonalNaive
from forecast.runs import run_rows


def test_run_rows_carry_targets_horizons_bands_and_fills() -> None:
    start = datetime(2026, 1, 5, tzinfo=UTC)
    epochs = int(start.timestamp()) + 900 * np.array([i for i in range(8 * 96) if i != 100], dtype=np.int64)
    series, report = regularize(epochs, np.ones(len(epochs)), timedelta(minutes=15), max_fill=4)
    forecast = OrNaive(SeasonalNaive(timedelta(days=1)), SeasonalNaive()).fit(series).forecast(series, 4)
    issued = datetime(2026, 1, 13, 0, 3, tzinfo=UTC)
    run, points = run_rows(forecast, series, "r1", "node_load", "feeder-1", issued, report)
    assert (run.first_target, run.step_s, run.horizon_steps, run.filled_steps) == (
        datetime(2026, 1, 13, tzinfo=UTC), 900, 4, 1)
    assert [p.horizon_steps for p in points] == [1, 2, 3, 4]
    assert points[-1].target_time == datetime(2026, 1, 13, 0, 45, tzinfo=UTC)
    assert all(p.q10 <= p.q50 <= p.q90 for p in points)
