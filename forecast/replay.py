"""A simulated day-ahead market: a pinned real price series replayed onto the current calendar.

The local system has no market feed, so it replays a real year (e.g. SMARD DE
2018). A target hour ``t`` takes the source's price at ``t - k weeks``, with
``k`` the whole number of weeks that brings ``t`` nearest to the same date in
the source year: the weekday and the UTC hour are kept exactly (so weekly and
daily shapes line up), the date within the year is kept to within three days.
Targets outside the source year wrap by whole 52-week blocks, which keeps the
weekday too. Local DST shifts of the two years may differ near the changeover
weeks, so an hour there can come from the neighbouring local hour.

Day-ahead: the prices of local day D are published on D-1 at the publication
time (12:45 local by default, after the EPEX auction), so at any moment the
known prices run to the end of today, or of tomorrow once that time has passed.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

import numpy as np

from forecast.series import WEEK, Array, Series

BLOCK = 52 * WEEK


def _same_date_in(year: int, t: datetime) -> datetime:
    """``t`` moved to ``year`` (29 February becomes 28 February)."""
    day = min(t.day, 28) if (t.month, t.day) == (2, 29) else t.day
    return t.replace(year=year, day=day)


def source_times(series: Series, targets: list[datetime]) -> list[datetime]:
    """The source time each target takes its value from (same weekday and UTC hour)."""
    end = series.time_at(len(series))
    year = series.time_at(len(series) // 2).year
    out: list[datetime] = []
    for t in targets:
        anchor = _same_date_in(year, t)
        s = t - round((t - anchor) / WEEK) * WEEK
        while s >= end:
            s -= BLOCK
        while s < series.start:
            s += BLOCK
        if s >= end:
            raise ValueError(f"{series.name} is shorter than 52 weeks: it cannot cover {t.isoformat()}")
        out.append(s)
    return out


def replay(series: Series, first: datetime, count: int) -> Array:
    """``count`` values of ``series`` replayed onto the steps from ``first`` (a step boundary)."""
    targets = [first + i * series.step for i in range(count)]
    index = [int((s - series.start) / series.step) for s in source_times(series, targets)]
    values: Array = np.asarray(series.values[index], dtype=np.float64)
    return values


def known_until(now: datetime, tz: str, publish_at: time) -> datetime:
    """The end of the last local day whose day-ahead prices are published at ``now`` (UTC-aware)."""
    zone = ZoneInfo(tz)
    local = now.astimezone(zone)
    days = 2 if local.time() >= publish_at else 1
    end_day = local.date() + timedelta(days=days)
    return datetime.combine(end_day, time(0), zone).astimezone(now.tzinfo)


def published_at(day_start: datetime, tz: str, publish_at: time) -> datetime:
    """When the day-ahead prices of the local day beginning at ``day_start`` were published."""
    zone = ZoneInfo(tz)
    local_day = day_start.astimezone(zone).date() - timedelta(days=1)
    return datetime.combine(local_day, publish_at, zone).astimezone(day_start.tzinfo)
