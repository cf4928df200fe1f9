"""Re-forecasting a stored run with another model (``vpp backtest --with-model``)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from bidding.bids import ENERGY
from bidding.remodel import FORECAST_MODELS, model_named, reforecast
from bidding.tasks import TaskInputError, forecast, market_data
from tests.bidding.test_tasks_and_journal import inputs, prices
from vpp.bid_cli import MODEL_NAMES


def test_the_daily_model_forecasts_what_the_run_forecast_from_the_same_market_data() -> None:
    data = market_data(inputs(), prices())
    again = reforecast(model_named("daily"), data, inputs())
    stored = forecast(ENERGY, data, inputs())
    assert again.mean == stored.mean and again.first == stored.first and len(again.std) == 24


def test_fallback_data_that_ends_early_is_forecast_across_the_gap() -> None:
    data = market_data(inputs(), prices())
    later = replace(inputs(), interval_start=inputs().interval_start + timedelta(hours=3))
    made = reforecast(model_named("daily"), data, later)
    assert made.first == later.interval_start and len(made.mean) == later.horizon_steps
    assert made.mean[0] == data.prices[-24 + 3]


def test_a_model_that_needs_more_history_refuses_with_the_reason_and_names_are_checked() -> None:
    with pytest.raises(TaskInputError, match="mstl cannot forecast"):
        reforecast(model_named("mstl"), market_data(inputs(), prices()), inputs())
    assert set(FORECAST_MODELS) == {"daily", "naive", "mstl"}
    assert set(MODEL_NAMES) == set(FORECAST_MODELS), "`vpp backtest --help` names the models it takes"
    with pytest.raises(ValueError, match="use one of daily, naive, mstl"):
        model_named("oracle")
