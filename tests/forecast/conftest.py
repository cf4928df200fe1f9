"""Synthetic series with known structure, small enough for millisecond-to-second fits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from forecast.series import Series

MONDAY = datetime(2024, 1, 1, tzinfo=UTC)  # a Monday, midnight UTC


def seasonal_series(weeks: int = 5, seed: int = 0, level: float = 100.0) -> Series:
    """Hourly: a daily shape, a weekend dip, a slow level drift and AR(1) noise."""
    rng = np.random.default_rng(seed)
    n = weeks * 168
    t = np.arange(n)
    hour, day = t % 24, (t // 24) % 7
    shape = 20 * np.sin(2 * np.pi * (hour - 6) / 24) - 15 * (day >= 5)
    noise = np.zeros(n)
    for i in range(1, n):
        noise[i] = 0.8 * noise[i - 1] + rng.normal(0, 2)
    return Series(MONDAY, timedelta(hours=1), level + 0.01 * t + shape + noise, "synthetic")


@pytest.fixture
def series() -> Series:
    return seasonal_series()
