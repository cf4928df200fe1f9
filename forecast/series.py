"""A regular time series: a UTC start, a fixed step and float values (NaN where nothing is known)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]
DAY = timedelta(days=1)
WEEK = timedelta(days=7)


@dataclass(frozen=True, slots=True)
class Series:
    """Values at ``start + i * step``; ``tz`` is the local zone whose calendar drives behaviour
    (weekday of a price, hour of a household's day)."""

    start: datetime
    step: timedelta
    values: Array
    name: str = ""
    tz: str = "UTC"

    def __post_init__(self) -> None:
        if self.start.tzinfo is None:
            raise ValueError("Series.start must be timezone-aware (UTC)")
        if self.step <= timedelta(0):
            raise ValueError(f"Series.step must be positive, got {self.step}")
        if self.values.ndim != 1:
            raise ValueError(f"Series.values must be one-dimensional, got shape {self.values.shape}")

    def __len__(self) -> int:
        return len(self.values)

    @property
    def step_s(self) -> int:
        """The step in whole seconds."""
        return int(self.step.total_seconds())

    def per(self, span: timedelta) -> int:
        """How many steps make ``span`` (a day, a week); refuses spans that are not a whole number."""
        steps, rest = divmod(int(span.total_seconds()), self.step_s)
        if rest or steps < 1:
            raise ValueError(f"{span} is not a whole number of {self.step} steps")
        return steps

    def time_at(self, index: int) -> datetime:
        """The UTC time of step ``index`` (may lie beyond the end: the time of a forecast target)."""
        return (self.start + index * self.step).astimezone(UTC)

    def head(self, end: int) -> Series:
        """A copy of the first ``end`` values: what a forecaster standing at step ``end`` may see."""
        return Series(self.start, self.step, self.values[:end].copy(), self.name, self.tz)

    def epoch_s(self, first: int, count: int) -> npt.NDArray[np.int64]:
        """Epoch seconds of ``count`` steps from index ``first``."""
        base = int(self.start.timestamp())
        return base + (first + np.arange(count, dtype=np.int64)) * self.step_s

    def local_calendar(self, first: int, count: int) -> tuple[npt.NDArray[np.int64], Array]:
        """Local weekday (Mon=0) and hour of day (fractional) for ``count`` steps from ``first``.

        DST-aware: the local offset is looked up once per distinct UTC hour.
        """
        epochs = self.epoch_s(first, count)
        zone = ZoneInfo(self.tz)
        hours = epochs // 3600
        unique_hours, inverse = np.unique(hours, return_inverse=True)
        offsets = np.array([
            datetime.fromtimestamp(int(h) * 3600, UTC).astimezone(zone).utcoffset().total_seconds()  # type: ignore[union-attr]
            for h in unique_hours
        ], dtype=np.int64)
        local = epochs + offsets[inverse]
        days = local // 86_400
        weekday = (days + 3) % 7  # 1970-01-01 was a Thursday
        hour = (local % 86_400) / 3600.0
        return weekday.astype(np.int64), hour.astype(np.float64)
