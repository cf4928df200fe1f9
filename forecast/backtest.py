"""Rolling-origin backtests with no look-ahead, and error by horizon bucket against the naive.

At each origin the model is fitted (on the refit schedule) on a copy of the
values before the origin and asked for the next ``horizon`` steps; the
forecasts are compared with what happened. Errors are reported per horizon
bucket as MAE, MAPE (only when the series never reaches zero: prices do, so
they never report it), MASE (scaled by the in-sample MAE of the seasonal naive
before the first origin) and rMAE (MAE relative to the baseline's MAE on the
same targets), plus how often the actual fell inside the 80% band.

The harness does not trust the models to keep away from the future: at a few
audit origins it overwrites every value from the origin on, *in the array the
caller passed*, fits and forecasts again, and restores the values. A forecast
that moves when only the future moved has seen the future
(:class:`LookAheadError`); this catches a model or a feature that holds a
reference to the full series.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

import numpy as np

from forecast.models import Fitted, Forecast, Model
from forecast.series import Array, Series


class LookAheadError(AssertionError):
    """A forecast changed when only values at or after its origin changed."""


@dataclass(frozen=True, slots=True)
class Plan:
    """Where to stand and how far to look: origins (step indices), horizon, refit schedule."""

    origins: tuple[int, ...]
    horizon: int
    refit_every: int = 1
    audits: int = 2

    @classmethod
    def daily(cls, series: Series, days: int, horizon: int, refit_every: int = 1, audits: int = 2) -> Plan:
        """The last ``days`` day starts (whole days from the series start) that leave a full horizon."""
        per_day = series.per(timedelta(days=1))
        last = len(series) - horizon
        last -= last % per_day
        origins = tuple(range(last - (days - 1) * per_day, last + 1, per_day))
        if origins[0] <= 0:
            raise ValueError(f"{days} daily origins do not fit in {len(series)} steps")
        return cls(origins, horizon, refit_every, audits)


@dataclass(slots=True)
class Run:
    """Forecasts and actuals of one model over a plan: one row per origin."""

    model: str
    mean: Array
    lower: Array
    upper: Array
    actual: Array
    fit_s: list[float] = field(default_factory=list)
    forecast_ms: list[float] = field(default_factory=list)
    notes: set[str] = field(default_factory=set)


def _audit(series: Series, model: Model, origin: int, horizon: int, reference: Forecast) -> None:
    values = series.values
    saved = values[origin:].copy()
    try:
        scale = float(np.nanstd(values[:origin])) or 1.0
        values[origin:] = saved[::-1] * 1.7 + 3.0 * scale  # anything but the truth
        probe = model.fit(series.head(origin)).forecast(series.head(origin), horizon)
    finally:
        values[origin:] = saved
    if not np.allclose(probe.mean, reference.mean, rtol=1e-9, atol=1e-9 * scale, equal_nan=True):
        moved = float(np.nanmax(np.abs(probe.mean - reference.mean)))
        raise LookAheadError(
            f"{model.name}: the forecast at origin {series.time_at(origin).isoformat()} moved by up to "
            f"{moved:.4g} when only values at or after the origin changed: it sees the future")


def run(series: Series, model: Model, plan: Plan) -> Run:
    """Backtest ``model`` over ``plan``; raises :class:`LookAheadError` if an audit catches a leak."""
    n_origins, horizon = len(plan.origins), plan.horizon
    if plan.origins[-1] + horizon > len(series):
        raise ValueError("the last origin's horizon runs past the end of the series")
    shape = (n_origins, horizon)
    out = Run(model.name, np.empty(shape), np.empty(shape), np.empty(shape), np.empty(shape))
    audit_at: set[int] = set()
    if plan.audits:
        audit_at = set(np.linspace(0, n_origins - 1, plan.audits).round().astype(int).tolist())
    fitted: Fitted | None = None
    for k, origin in enumerate(plan.origins):
        history = series.head(origin)
        if fitted is None or k % plan.refit_every == 0:
            started = time.perf_counter()
            fitted = model.fit(history)
            out.fit_s.append(time.perf_counter() - started)
        started = time.perf_counter()
        forecast = fitted.forecast(history, horizon)
        out.forecast_ms.append((time.perf_counter() - started) * 1000)
        if k in audit_at:
            fresh = fitted if k % plan.refit_every == 0 else model.fit(history)
            _audit(series, model, origin, horizon, fresh.forecast(history, horizon))
        if forecast.note:
            out.notes.add(forecast.note)
        out.mean[k] = forecast.mean
        out.lower[k] = forecast.quantile(0.1)
        out.upper[k] = forecast.quantile(0.9)
        out.actual[k] = series.values[origin:origin + horizon]
    return out


@dataclass(frozen=True, slots=True)
class BucketError:
    """Error of one model over the targets whose horizon falls in ``[first, last]`` steps."""

    label: str
    first: int
    last: int
    mae: float
    mape_pct: float | None
    mase: float
    rmae: float
    coverage_80: float


def buckets_for(step: timedelta, horizon: int) -> list[tuple[int, int]]:
    """Horizon buckets (1-based step ranges) at 1 h, 3 h, 6 h, 12 h, 24 h, 48 h, ... up to the horizon."""
    edges_h = [1, 3, 6, 12, 24, 48, 96, 168]
    per_hour = timedelta(hours=1) / step
    out, first = [], 1
    for edge in edges_h:
        last = min(horizon, round(edge * per_hour))
        if last >= first:
            out.append((first, last))
            first = last + 1
    if first <= horizon:
        out.append((first, horizon))
    return out


def naive_scale(series: Series, before: int, season: timedelta = timedelta(days=7)) -> float:
    """In-sample MAE of the seasonal naive before ``before``: the MASE denominator."""
    lag = series.per(season)
    y = series.values[:before]
    return float(np.nanmean(np.abs(y[lag:] - y[:-lag])))


def crosses_zero(series: Series) -> bool:
    """True when any value is zero or negative: MAPE is then meaningless and never reported."""
    return bool(np.nanmin(series.values) <= 0)


def score(series: Series, result: Run, baseline: Run, plan: Plan) -> list[BucketError]:
    """Errors per horizon bucket, plus an "all" row over every horizon."""
    if baseline.actual.shape != result.actual.shape:
        raise ValueError("the baseline ran a different plan")
    scale = naive_scale(series, plan.origins[0])
    no_mape = crosses_zero(series)
    rows = []
    for first, last in [*buckets_for(series.step, plan.horizon), (1, plan.horizon)]:
        cols = slice(first - 1, last)
        actual = result.actual[:, cols]
        abs_err = np.abs(result.mean[:, cols] - actual)
        mae = float(abs_err.mean())
        base_mae = float(np.abs(baseline.mean[:, cols] - actual).mean())
        inside = (result.lower[:, cols] <= actual) & (actual <= result.upper[:, cols])
        span = (first - 1, last) if (first, last) != (1, plan.horizon) else None
        label = _label(series.step, *span) if span else "all"
        rows.append(BucketError(
            label, first, last, mae,
            None if no_mape else float((abs_err / np.abs(actual)).mean() * 100),
            mae / scale if scale > 0 else float("nan"),
            mae / base_mae if base_mae > 0 else float("nan"),
            float(inside.mean()),
        ))
    return rows


def _label(step: timedelta, before: int, last: int) -> str:
    def hours(steps: int) -> str:
        h = steps * step / timedelta(hours=1)
        return f"{h:g}h"
    return f"{hours(before)}-{hours(last)}"


def median(values: Sequence[float]) -> float:
    """Median of timings (0 when there are none)."""
    return float(np.median(values)) if values else 0.0
