"""Raw readings to a regular series: gaps, NaNs and DST shifts counted, filled only within a limit.

Telemetry history and published files are never perfectly regular: a device
is offline for an hour, a value is NaN, and data kept in local wall-clock time
loses an hour in spring (a missing slot) and repeats one in autumn (a
duplicate slot). :func:`regularize` puts readings on the grid, averages
duplicates, interpolates runs of missing values no longer than ``max_fill``
steps, and returns a :class:`FillReport` that says how much it did. A longer
gap is refused (:class:`GapTooLongError`), because a model fitted across invented
days forecasts the invention.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import numpy.typing as npt

from forecast.series import Array, Series


class GapTooLongError(ValueError):
    """A run of missing values is longer than the fill limit; the message says where."""


class InsufficientHistoryError(ValueError):
    """Too little history for the model asked for; the message gives the reason."""


@dataclass(frozen=True, slots=True)
class FillReport:
    """What :func:`regularize` changed: counts in slots of the series' step."""

    slots: int
    missing: int
    nans: int
    duplicates: int
    filled: int
    longest_run: int
    max_fill: int

    def describe(self) -> str:
        """One line for a run's output."""
        return (f"{self.filled} of {self.slots} slots filled ({self.missing} missing, {self.nans} NaN, "
                f"{self.duplicates} duplicate slots averaged; longest run {self.longest_run}, "
                f"limit {self.max_fill})")


def _runs(mask: npt.NDArray[np.bool_]) -> list[tuple[int, int]]:
    """(start, length) of each run of True."""
    padded = np.concatenate(([False], mask, [False]))
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return [(int(a), int(b - a)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def regularize(
    epoch_s: npt.NDArray[np.int64], values: Array, step: timedelta, max_fill: int, name: str = "",
    tz: str = "UTC",
) -> tuple[Series, FillReport]:
    """Put readings on the grid ``min(epoch_s) + k * step`` and fill short runs by interpolation.

    Readings are snapped to the slot they fall in; several in one slot are averaged
    (counted as duplicates). A run of missing or NaN slots of at most ``max_fill``
    steps is filled linearly between its neighbours; a longer one, or one at either
    end, raises :class:`GapTooLongError`.
    """
    if len(epoch_s) == 0:
        raise InsufficientHistoryError("no readings at all")
    step_s = int(step.total_seconds())
    first = int(epoch_s.min())
    slot = (epoch_s - first) // step_s
    slots = int(slot.max()) + 1
    finite = np.isfinite(values)
    nans = int((~finite).sum())
    sums = np.bincount(slot[finite], weights=values[finite], minlength=slots)
    counts = np.bincount(slot[finite], minlength=slots)
    seen = np.bincount(slot, minlength=slots)
    duplicates = int((seen > 1).sum())
    missing = int((seen == 0).sum())
    out = np.full(slots, np.nan)
    np.divide(sums, counts, out=out, where=counts > 0)
    holes = ~np.isfinite(out)
    runs = _runs(holes)
    longest = max((length for _, length in runs), default=0)
    start = datetime.fromtimestamp(first, UTC)
    for run_start, length in runs:
        where = start + run_start * step
        if run_start == 0 or run_start + length == slots:
            side = "start" if run_start == 0 else "end"
            raise GapTooLongError(f"{name or 'series'}: {length} missing slot(s) at the {side} "
                                  f"({where.isoformat()}); trim the series to known values")
        if length > max_fill:
            raise GapTooLongError(f"{name or 'series'}: {length} consecutive missing slot(s) from "
                                  f"{where.isoformat()} exceed the fill limit of {max_fill}")
    if runs:
        known = np.flatnonzero(~holes)
        out[holes] = np.interp(np.flatnonzero(holes), known, out[known])
    report = FillReport(slots, missing, nans, duplicates, int(holes.sum()), longest, max_fill)
    return Series(start, step, out, name, tz), report


def require_history(series: Series, cycles: int = 2, season: timedelta = timedelta(days=7)) -> None:
    """Refuse history shorter than ``cycles`` seasons (two weeks by default), with the reason."""
    need = cycles * series.per(season)
    if len(series) < need:
        have = len(series) * series.step
        raise InsufficientHistoryError(
            f"{series.name or 'series'} has {have} of history; the seasonal models need at least "
            f"{cycles} x {season} ({need} steps of {series.step})")
