"""A forecast as the rows the history keeps: one run and its points, with what cleaning filled."""

from __future__ import annotations

from datetime import datetime

from core.rows import ForecastPoint, ForecastRunRow
from forecast.clean import FillReport
from forecast.models import Forecast
from forecast.series import Series


def run_rows(
    forecast: Forecast, history: Series, run_id: str, series_kind: str, series_id: str, issued_at: datetime,
    filled: FillReport | None = None,
) -> tuple[ForecastRunRow, list[ForecastPoint]]:
    """The ``forecast_runs`` row and the ``forecast_points`` rows of ``forecast`` made from ``history``."""
    q10, q50, q90 = (forecast.quantile(q) for q in (0.1, 0.5, 0.9))
    first = history.time_at(forecast.origin)
    run = ForecastRunRow(run_id, series_kind, series_id, forecast.model, issued_at, first, history.step_s,
                         len(forecast.mean), len(history), filled.filled if filled else 0, forecast.note)
    points = [
        ForecastPoint(run_id, series_kind, series_id, forecast.model, issued_at,
                      history.time_at(forecast.origin + h), h + 1, float(forecast.mean[h]), float(q10[h]),
                      float(q50[h]), float(q90[h]))
        for h in range(len(forecast.mean))
    ]
    return run, points
