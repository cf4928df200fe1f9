"""The simulated market's calendar mapping and day-ahead publication (forecast.replay)."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import numpy as np
import pytest

from forecast.replay import known_until, published_at, replay, source_times
from forecast.series import Series

YEAR = Series(datetime(2017, 12, 31, 23, tzinfo=UTC), timedelta(hours=1), np.arange(8760, dtype=np.float64),
              "synthetic:2018", "Europe/Berlin")
NOON = time(12, 45)


@pytest.mark.parametrize("target", [
    datetime(2026, 12, 1, 5, tzinfo=UTC), datetime(2026, 6, 15, 13, tzinfo=UTC),
    datetime(2026, 12, 31, 22, tzinfo=UTC), datetime(2027, 1, 1, 3, tzinfo=UTC),
    datetime(2028, 2, 29, 0, tzinfo=UTC),
])
def test_a_target_takes_the_same_weekday_and_hour_inside_the_source_year(target: datetime) -> None:
    (source,) = source_times(YEAR, [target])
    assert YEAR.start <= source < YEAR.time_at(len(YEAR))
    assert (target - source) % timedelta(weeks=1) == timedelta(0)  # weekday and UTC hour kept


def test_the_date_within_the_year_is_kept_to_within_half_a_week_away_from_the_seam() -> None:
    (source,) = source_times(YEAR, [datetime(2026, 6, 15, 13, tzinfo=UTC)])
    assert abs(source - datetime(2018, 6, 15, 13, tzinfo=UTC)) <= timedelta(days=3, hours=12)


def test_replay_reads_consecutive_hours_of_the_source() -> None:
    values = replay(YEAR, datetime(2026, 6, 15, 0, tzinfo=UTC), 48)
    assert np.array_equal(np.diff(values), np.ones(47))


def test_tomorrows_prices_are_known_only_after_the_publication_time() -> None:
    before = datetime(2026, 6, 15, 10, 0, tzinfo=UTC)  # 12:00 Berlin (CEST)
    after = datetime(2026, 6, 15, 11, 0, tzinfo=UTC)  # 13:00 Berlin
    assert known_until(before, "Europe/Berlin", NOON) == datetime(2026, 6, 15, 22, tzinfo=UTC)
    assert known_until(after, "Europe/Berlin", NOON) == datetime(2026, 6, 16, 22, tzinfo=UTC)
    assert published_at(datetime(2026, 6, 15, 22, tzinfo=UTC), "Europe/Berlin", NOON) == datetime(
        2026, 6, 15, 10, 45, tzinfo=UTC)
