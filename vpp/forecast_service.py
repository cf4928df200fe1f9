"""Node forecasts on demand: a node's history from ``node_minute`` to a forecast run in ClickHouse.

One call reads the node's load or solar at 15 minutes over the last four weeks,
regularises it (gaps up to ``max_fill`` slots filled and counted in the run),
fits the model (Holt-Winters by default; the seasonal naive, flagged in the
run's ``note``, when there are less than two weeks) and writes the run and its
points, plus a same-slot-last-week run noted ``baseline``. ``forecast_node_errors``
scores both once the actuals are in ``node_minute``, so a model whose recent
error is worse than the naive's can be flagged. Not yet here: the schedule, and
price regions on ``prices.forecast``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import numpy as np

from core.history import HistoryStore
from core.rows import ForecastPoint, ForecastRunRow
from forecast.clean import FillReport, GapTooLongError, InsufficientHistoryError, regularize
from forecast.models import Forecast, HoltWinters, Model, OrNaive, SeasonalNaive
from forecast.runs import run_rows

STEP = timedelta(minutes=15)
SeriesKind = Literal["node_load", "node_solar"]
SERIES_KINDS: tuple[SeriesKind, ...] = ("node_load", "node_solar")
BASELINE_NOTE = "baseline"  # the naive run issued beside every forecast, so its error can be compared
COLUMNS: dict[str, Literal["load_kw", "solar_kw"]] = {"node_load": "load_kw", "node_solar": "solar_kw"}


@dataclass(frozen=True, slots=True)
class IssuedRun:
    """What a forecast run wrote, and what cleaning did to its history."""

    run: ForecastRunRow
    points: list[ForecastPoint]
    filled: FillReport
    baseline: ForecastRunRow


def forecast_node(
    store: HistoryStore, node_id: str, series_kind: SeriesKind, now: datetime, model: Model | None = None,
    history: timedelta = timedelta(days=28), horizon_steps: int = 96, max_fill: int = 8,
) -> IssuedRun:
    """Forecast one node series ``horizon_steps`` quarter-hours ahead of the last complete one; store it."""
    step_s = int(STEP.total_seconds())
    end = datetime.fromtimestamp(int(now.timestamp()) // step_s * step_s, UTC)
    times, values = store.node_quarter_hours(node_id, COLUMNS[series_kind], end - history, end)
    if not times:
        raise InsufficientHistoryError(f"node {node_id} has no {COLUMNS[series_kind]} history before {end}")
    if times[-1] != end - STEP:
        raise InsufficientHistoryError(
            f"node {node_id}'s latest {COLUMNS[series_kind]} is for {times[-1].isoformat()}, not the last "
            f"complete quarter-hour {(end - STEP).isoformat()}: the history is stale")
    epochs = np.array([int(t.timestamp()) for t in times], dtype=np.int64)
    series, filled = regularize(epochs, np.array(values), STEP, max_fill, f"{node_id}:{series_kind}")
    chosen = OrNaive(model or HoltWinters(), SeasonalNaive())
    forecast = chosen.fit(series).forecast(series, horizon_steps)
    run, points = run_rows(forecast, series, uuid.uuid4().hex, series_kind, node_id, now, filled)
    store.insert_forecast(run, points)
    naive = SeasonalNaive().fit(series).forecast(series, horizon_steps)
    naive = Forecast(naive.origin, naive.mean, naive.std, naive.model, BASELINE_NOTE)
    baseline, baseline_points = run_rows(naive, series, uuid.uuid4().hex, series_kind, node_id, now, filled)
    store.insert_forecast(baseline, baseline_points)
    return IssuedRun(run, points, filled, baseline)


@dataclass(frozen=True, slots=True)
class Round:
    """One scheduled pass: the runs issued and, per ``node_id:series_kind``, why others were refused."""

    issued: list[IssuedRun]
    refused: dict[str, str]


def forecast_round(store: HistoryStore, node_ids: list[str], kinds: list[SeriesKind], now: datetime) -> Round:
    """Forecast every node series; a node whose history is refused is reported and the round goes on."""
    issued: list[IssuedRun] = []
    refused: dict[str, str] = {}
    for node_id in node_ids:
        for kind in kinds:
            try:
                issued.append(forecast_node(store, node_id, kind, now))
            except (InsufficientHistoryError, GapTooLongError) as exc:
                refused[f"{node_id}:{kind}"] = str(exc)
    return Round(issued, refused)
