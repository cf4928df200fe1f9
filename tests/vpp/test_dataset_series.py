"""The loaders on the real pinned files (fetched by `vpp datasets fetch`; missing files fail loudly)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from core.config import Settings
from forecast import backtest
from forecast.models import SeasonalNaive
from vpp import dataset_series
from vpp.datasets import DatasetError


@pytest.fixture(scope="module")
def datasets_dir() -> Path:
    return Settings().datasets_dir


def test_taylor_is_4032_half_hours_from_monday_5_june_2000(datasets_dir: Path) -> None:
    series = dataset_series.taylor(datasets_dir)
    assert len(series) == 4032 and series.step == timedelta(minutes=30)
    assert series.values[:3].tolist() == [22262.0, 21756.0, 22247.0]
    weekday, hour = series.local_calendar(0, 1)
    assert (int(weekday[0]), float(hour[0])) == (0, 0.0)  # Monday, midnight UK time


def test_taylor_naive_mape_over_the_last_four_weeks_is_the_known_215_pct(datasets_dir: Path) -> None:
    series = dataset_series.taylor(datasets_dir)
    plan = backtest.Plan.daily(series, 28, 48, audits=0)
    naive = backtest.run(series, SeasonalNaive(), plan)
    overall = backtest.score(series, naive, naive, plan)[-1]
    assert overall.mape_pct == pytest.approx(2.15, abs=0.01)


def test_smard_de_2018_joins_the_zone_split_and_resolves_dst(datasets_dir: Path) -> None:
    series = dataset_series.smard(datasets_dir, "DE", 2018)
    assert len(series) == 8760 and np.isfinite(series.values).all()
    assert series.start == datetime(2017, 12, 31, 23, tzinfo=UTC)
    assert series.values.min() < 0  # negative prices: MAPE never reported
    assert backtest.crosses_zero(series)
    # 28 October 2018: Berlin's 02:00 happened twice; the second one is 01:00 UTC
    second = int((datetime(2018, 10, 28, 1, tzinfo=UTC) - series.start) / series.step)
    assert series.values[second - 1: second + 1].tolist() == [41.62, 41.59]


def test_simbench_feeder_profile_is_a_leap_year_of_quarter_hours(datasets_dir: Path) -> None:
    series = dataset_series.simbench(datasets_dir, "mv_urban_pload")
    assert len(series) == 366 * 96 and series.step == timedelta(minutes=15)
    assert "PV3" in dataset_series.simbench_columns(datasets_dir)
    with pytest.raises(DatasetError, match="no SimBench profile column"):
        dataset_series.simbench(datasets_dir, "nope")
