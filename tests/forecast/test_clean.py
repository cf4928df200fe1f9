"""Bad input: gaps, NaNs and DST shifts are counted and filled only within the stated limit."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from forecast.clean import GapTooLongError, InsufficientHistoryError, regularize, require_history
from forecast.series import Series

HOUR = timedelta(hours=1)
T0 = int(datetime(2024, 3, 30, tzinfo=UTC).timestamp())


def test_short_gaps_and_nans_are_filled_and_counted() -> None:
    epochs = T0 + 3600 * np.array([0, 1, 2, 4, 5, 6, 7], dtype=np.int64)  # slot 3 missing
    values = np.array([0.0, 1.0, 2.0, 4.0, np.nan, 6.0, 7.0])  # slot 5 NaN
    series, report = regularize(epochs, values, HOUR, max_fill=2)
    np.testing.assert_allclose(series.values, np.arange(8.0))
    assert (report.missing, report.nans, report.filled, report.longest_run) == (1, 1, 2, 1)
    assert "2 of 8 slots filled" in report.describe()


def test_a_gap_longer_than_the_limit_is_refused_with_where() -> None:
    epochs = T0 + 3600 * np.array([0, 1, 5, 6], dtype=np.int64)
    with pytest.raises(GapTooLongError, match=r"3 consecutive missing slot.*limit of 2"):
        regularize(epochs, np.ones(4), HOUR, max_fill=2)


def test_dst_shifts_in_wall_clock_data_are_a_gap_and_a_duplicate() -> None:
    """Readings labelled in local time: spring loses 02:00, autumn repeats it."""
    labels = [0, 1, 3, 4, 5, 5, 6]  # hour 2 never happened, hour 5 came twice
    values = np.array([10.0, 11.0, 13.0, 14.0, 15.0, 17.0, 16.0])
    series, report = regularize(T0 + 3600 * np.array(labels, dtype=np.int64), values, HOUR, max_fill=1)
    assert (report.missing, report.duplicates, report.filled) == (1, 1, 1)
    np.testing.assert_allclose(series.values, [10, 11, 12, 13, 14, 16, 16])


def test_history_shorter_than_two_weeks_is_refused_with_the_reason() -> None:
    start = datetime(2024, 1, 1, tzinfo=UTC)
    short = Series(start, HOUR, np.ones(13 * 24), "node-7:load")
    with pytest.raises(InsufficientHistoryError, match=r"node-7:load has 13 days.*at least 2 x 7 days"):
        require_history(short)
    require_history(Series(start, HOUR, np.ones(14 * 24)))
