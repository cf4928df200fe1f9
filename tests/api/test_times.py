"""Times from callers: one with no UTC time is refused as input (a 422), never an error in a route."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from api.models import storable, utc

EARLY_EAST = datetime(1, 1, 1, 0, 4, tzinfo=timezone(timedelta(hours=4)))  # year 0 in UTC
LATE_WEST = datetime(9999, 12, 31, 23, 0, tzinfo=timezone(timedelta(hours=-4)))  # year 10000 in UTC


@pytest.mark.parametrize("value", [EARLY_EAST, LATE_WEST])
def test_a_time_with_no_utc_time_is_a_value_error(value: datetime) -> None:
    with pytest.raises(ValueError, match="no UTC time"):
        utc(value)
    with pytest.raises(ValueError, match="no UTC time"):
        storable(value)


def test_times_in_range_become_utc() -> None:
    new_year = datetime(2026, 1, 1, tzinfo=UTC)
    assert utc(datetime(2026, 1, 1, 4, tzinfo=timezone(timedelta(hours=4)))) == new_year
    assert utc(new_year.replace(tzinfo=None)) == new_year, "a naive time is taken as UTC"
