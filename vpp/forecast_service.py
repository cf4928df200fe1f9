"""Node forecasts on demand: a node's history from ``node_minute`` to a forecast run in ClickHouse.

One call reads the node's load or solar at 15 minutes over the last four weeks,
regularises it (gaps up to ``max_fill`` slots filled and counted in the run),
fits the model (Holt-Winters by default; the seasonal naive, flagged in the
run's ``note``, when there are less than two weeks) and writes the run and its
points, plus a same-slot-last-week run noted ``baseline``. ``forecast_node_errors``
scores both once the actuals are in ``node_minute``, so a model whose recent
error is worse than the naive's can be flagged.

Price regions: :func:`forecast_price` reads a region's hourly ``market_prices``,
forecasts the hours after the last published one with MSTL+AR (the price naive,
flagged, on short history), writes the run with a price-naive baseline, and
publishes it as a ``PriceForecast`` on ``prices.forecast`` (keyed by region), which
the gateway delivers to the region's sites. ``forecast_price_errors`` scores it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import numpy as np
from confluent_kafka import Producer

from core.history import HistoryStore
from core.rows import ForecastPoint, ForecastRunRow
from core.topics import PRICES_FORECAST
from forecast.clean import FillReport, GapTooLongError, InsufficientHistoryError, regularize
from forecast.models import Forecast, HoltWinters, Model, MstlAr, OrNaive, PriceNaive, SeasonalNaive
from forecast.runs import run_rows
from schemas.codec import AvroCodec

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


PRICE_STEP = timedelta(hours=1)


def forecast_price(
    store: HistoryStore, region: str, now: datetime, tz: str = "Europe/Berlin", model: Model | None = None,
    history: timedelta = timedelta(weeks=8), horizon_steps: int = 48, max_fill: int = 3,
) -> IssuedRun:
    """Forecast a region's hourly price for the ``horizon_steps`` hours after the last published one."""
    prices = store.market_prices(region, now - history - timedelta(days=2), now + timedelta(days=2))
    if not prices:
        raise InsufficientHistoryError(f"region {region} has no market prices: is the market feed running "
                                       "(`vpp market serve`)?")
    if any(p.interval_minutes != 60 for p in prices):
        raise InsufficientHistoryError(f"region {region} has prices at other than 60-minute intervals")
    epochs = np.array([int(p.interval_start.timestamp()) for p in prices], dtype=np.int64)
    if prices[-1].interval_start < now - timedelta(days=1):
        raise InsufficientHistoryError(f"region {region}'s latest price is for "
                                       f"{prices[-1].interval_start.isoformat()}: the market feed is stale")
    series, filled = regularize(epochs, np.array([p.price_eur_mwh for p in prices]), PRICE_STEP, max_fill,
                                f"{region}:price", tz)
    chosen = OrNaive(model or MstlAr(), PriceNaive())
    forecast = chosen.fit(series).forecast(series, horizon_steps)
    run, points = run_rows(forecast, series, uuid.uuid4().hex, "price", region, now, filled)
    store.insert_forecast(run, points)
    naive = PriceNaive().fit(series).forecast(series, horizon_steps)
    naive = Forecast(naive.origin, naive.mean, naive.std, naive.model, BASELINE_NOTE)
    baseline, baseline_points = run_rows(naive, series, uuid.uuid4().hex, "price", region, now, filled)
    store.insert_forecast(baseline, baseline_points)
    return IssuedRun(run, points, filled, baseline)


def price_record(issued: IssuedRun, currency: str = "EUR") -> dict[str, object]:
    """The ``PriceForecast`` record of a price run (schemas/avro/PriceForecast.avsc, fields as they are)."""
    run = issued.run
    return {"region": run.series_id, "issued_at": run.issued_at, "start": run.first_target,
            "interval_minutes": run.step_s // 60, "prices_per_mwh": [p.value for p in issued.points],
            "currency": currency}


class PublishError(RuntimeError):
    """A price forecast was stored but not delivered to ``prices.forecast``."""


def publish_price(producer: Producer, codec: AvroCodec, issued: IssuedRun) -> None:
    """Send a price run on ``prices.forecast``, keyed by its region, and wait for delivery."""
    producer.produce(PRICES_FORECAST, key=issued.run.series_id.encode(),
                     value=codec.encode("PriceForecast", price_record(issued)))
    if producer.flush(30) != 0:
        raise PublishError(f"the price forecast for {issued.run.series_id} was not delivered within 30 s")
