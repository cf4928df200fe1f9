"""Re-forecasting a stored run with another model: what ``vpp backtest --with-model NAME`` decides from.

A backtest replays stored decisions through today's logic; with a model it also replaces the run's
stored energy forecast by that model's forecast, made from the very market data the run fetched
(its ``market`` artifact), so the only change is the forecast. The market data carries no calendar
zone, so calendar-driven models (``naive``: last week's price on Monday, Saturday and Sunday) read
its days in UTC. Models that need more history than the run fetched (``mstl``: two weeks, with
``VPP_BID_HISTORY_DAYS`` at 7) refuse with the reason, and the backtest reports that run as not
replayed.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import numpy as np

from bidding.bids import ENERGY
from bidding.tasks import DIGITS, MarketData, PriceForecast, RunInputs, TaskInputError
from forecast.models import Model, MstlAr, PriceNaive, SeasonalNaive
from forecast.series import DAY, Series


def _daily() -> Model:
    return SeasonalNaive(DAY, "daily")


#: The models a backtest can re-forecast with, by the name ``--with-model`` takes.
FORECAST_MODELS: dict[str, Callable[[], Model]] = {"daily": _daily, "naive": PriceNaive, "mstl": MstlAr}


def model_named(name: str) -> Model:
    """The model called ``name``; ValueError naming the known ones otherwise."""
    try:
        return FORECAST_MODELS[name]()
    except KeyError:
        raise ValueError(f"no forecast model {name!r}: use one of {', '.join(FORECAST_MODELS)}") from None


def reforecast(model: Model, market: MarketData, inputs: RunInputs) -> PriceForecast:
    """The energy forecast ``model`` makes from ``market`` for the run's horizon (from its interval on)."""
    step = timedelta(seconds=market.step_s)
    series = Series(market.first, step, np.asarray(market.prices, dtype=np.float64), market.region)
    gap = max(0, int((inputs.interval_start - market.end) / step))  # fallback data may end earlier
    try:
        made = model.fit(series).forecast(series, gap + inputs.horizon_steps)
    except ValueError as exc:
        raise TaskInputError(f"{model.name} cannot forecast from this market data: {exc}") from exc
    mean, std = made.mean[gap:], made.std[gap:]
    if not (np.isfinite(mean).all() and np.isfinite(std).all()):
        raise TaskInputError(f"{model.name} forecast a non-finite price")
    return PriceForecast(ENERGY, inputs.interval_start, market.step_s,
                         tuple(round(float(v), DIGITS) for v in mean),
                         tuple(round(max(float(v), 0.0), DIGITS) for v in std), market.end)
