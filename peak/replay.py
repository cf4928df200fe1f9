"""The plan-level year replay: plan each day from a forecast of the past, run it against the actual load.

For every day of a load series (whole days from ``series.start``, which must be
local midnight), the replay

1. forecasts the day from the history before it only (``model``, refit every
   ``refit_days``; the seasonal naive forecasts the same day alongside, so a
   model whose recent days were worse than the naive is flagged),
2. plans the day with :class:`peak.planner.Planner` from the fleet's state at
   midnight (its energy carried over from the day before),
3. executes it against the actual load with :func:`peak.executor.follow_threshold`,
   holding at least the month's net peak so far (``billing_floor``: the bill is
   the monthly peak, so discharging below what the month has already reached buys
   nothing and spends energy a later, higher interval of the day may need),

and runs two references on the same days: a fixed discharge window with
immediate recharge (the fleet carried over the same way) and the
perfect-foresight LP (the planner given the actual load, median, full fleet).
A day with no forecast (too little history) has no event and says why.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import timedelta
from zoneinfo import ZoneInfo

import numpy as np

from forecast.clean import InsufficientHistoryError
from forecast.models import Fitted, Model, SeasonalNaive
from forecast.series import DAY, Series
from peak.executor import DayRun, fixed_window, follow_threshold
from peak.fleet import FleetCapacity
from peak.planner import Array, LoadForecast, NoEvent, Plan, Planner


@dataclass(frozen=True, slots=True)
class DayResult:
    """One replayed day: the plan (or why none) and the three runs against the actual load."""

    day: int
    plan: Plan | NoEvent
    vpp: DayRun
    window: DayRun
    perfect_peak_kw: float
    forecast_mae: float | None
    naive_mae: float | None


@dataclass(frozen=True, slots=True)
class MonthResult:
    """A month's peaks (kW) and reductions (percent of the peak without the fleet)."""

    month: int
    days: int
    events: int
    peak_none_kw: float
    peak_vpp_kw: float
    peak_window_kw: float
    peak_perfect_kw: float

    def reduction_pct(self, peak_kw: float) -> float:
        """How much lower ``peak_kw`` is than the peak without the fleet, in percent."""
        return 100.0 * (self.peak_none_kw - peak_kw) / self.peak_none_kw

    @property
    def vpp_pct(self) -> float:
        """The planned-and-executed fleet's monthly peak reduction."""
        return self.reduction_pct(self.peak_vpp_kw)

    @property
    def window_pct(self) -> float:
        """The fixed window's (negative: worse than nothing)."""
        return self.reduction_pct(self.peak_window_kw)

    @property
    def perfect_pct(self) -> float:
        """The perfect-foresight LP's."""
        return self.reduction_pct(self.peak_perfect_kw)


@dataclass(frozen=True, slots=True)
class YearResult:
    """The replay of one series: every day, and the months they make."""

    series: str
    days: list[DayResult]
    months: list[MonthResult]
    plan_s: list[float] = field(default_factory=list)
    forecast_s: list[float] = field(default_factory=list)

    @property
    def rebound_days(self) -> int:
        """Days whose peak with the planned fleet exceeds the peak without it."""
        return sum(d.vpp.rebound for d in self.days)

    @property
    def window_rebound_days(self) -> int:
        """The same count for the fixed window."""
        return sum(d.window.rebound for d in self.days)


def fleet_for(series: Series, power_share: float = 0.1, hours: float = 2.0) -> FleetCapacity:
    """A fleet of ``power_share`` of the annual peak for ``hours``, full at the start."""
    power = power_share * float(np.nanmax(series.values))
    return FleetCapacity(power, power, power * hours, 0.0)


def _mae(a: Array, b: Array) -> float:
    return float(np.mean(np.abs(a - b)))


def replay_year(series: Series, model: Model, fleet: FleetCapacity, quantile: float = 0.5,
                window_hours: tuple[float, float] = (17.0, 19.0), refit_days: int = 7,
                judge_days: int = 14, billing_floor: bool = True,
                progress: Callable[[str], None] = lambda _: None) -> YearResult:
    """Replay every whole day of ``series`` (see the module docstring)."""
    per_day = series.per(DAY)
    step_h = series.step.total_seconds() / 3600
    days = len(series) // per_day
    planner, perfect = Planner(per_day, step_h, quantile), Planner(per_day, step_h, 0.5)
    naive = SeasonalNaive()
    window = (int(window_hours[0] / step_h), int(window_hours[1] / step_h))
    energy_vpp = energy_window = fleet.energy_kwh
    fitted: Fitted | None = None
    model_errors: deque[float] = deque(maxlen=judge_days)
    naive_errors: deque[float] = deque(maxlen=judge_days)
    results: list[DayResult] = []
    local_start = series.start.astimezone(ZoneInfo(series.tz))
    current_month, month_peak = 0, -np.inf
    plan_s: list[float] = []
    forecast_s: list[float] = []
    for day in range(days):
        first = day * per_day
        actual = series.values[first:first + per_day]
        history = series.head(first)
        began = time.perf_counter()
        forecast: LoadForecast | None = None
        naive_mean: Array | None = None
        try:
            if fitted is None or day % refit_days == 0:
                fitted = model.fit(history)
            predicted = fitted.forecast(history, per_day)
            naive_mean = naive.fit(history).forecast(history, per_day).mean
            worse = len(model_errors) >= judge_days // 2 and sum(model_errors) > sum(naive_errors)
            forecast = LoadForecast(series.time_at(first), series.step, predicted.mean, predicted.std,
                                    predicted.model, worse)
        except (InsufficientHistoryError, ValueError):
            fitted = None
        forecast_s.append(time.perf_counter() - began)
        state = replace(fleet, energy_kwh=energy_vpp, headroom_kwh=fleet.capacity_kwh - energy_vpp)
        began = time.perf_counter()
        plan = planner.plan(forecast, state)
        if isinstance(plan, Plan):
            plan_s.append(time.perf_counter() - began)
        month = (local_start + timedelta(days=day)).month
        if month != current_month:
            current_month, month_peak = month, -np.inf
        vpp = follow_threshold(actual, plan.threshold_kw if isinstance(plan, Plan) else None, fleet, step_h,
                               energy_vpp, month_peak if billing_floor else -np.inf)
        month_peak = max(month_peak, float(vpp.net_kw.max()))
        energy_vpp = float(vpp.energy_kwh[-1])
        fixed = fixed_window(actual, window, fleet, step_h, energy_window)
        energy_window = float(fixed.energy_kwh[-1])
        hindsight = LoadForecast(series.time_at(first), series.step, actual, np.zeros(per_day))
        best = perfect.plan(hindsight, fleet)
        perfect_peak = float(actual.max())
        if isinstance(best, Plan):
            perfect_peak = min(best.threshold_kw, perfect_peak)
        model_mae = _mae(forecast.mean_kw, actual) if forecast is not None else None
        naive_mae = _mae(naive_mean, actual) if naive_mean is not None else None
        if model_mae is not None and naive_mae is not None:
            model_errors.append(model_mae)
            naive_errors.append(naive_mae)
        results.append(DayResult(day, plan, vpp, fixed, perfect_peak, model_mae, naive_mae))
        if day % 30 == 0:
            progress(f"{series.name}: day {day + 1}/{days}")
    return YearResult(series.name, results, _months(series, results), plan_s, forecast_s)


def _months(series: Series, days: list[DayResult]) -> list[MonthResult]:
    """Group the days by local calendar month (the series' start is local midnight)."""
    local_start = series.start.astimezone(ZoneInfo(series.tz))
    groups: dict[int, list[DayResult]] = {}
    for result in days:
        month = (local_start + timedelta(days=result.day)).month
        groups.setdefault(month, []).append(result)
    out = []
    for month, group in sorted(groups.items()):
        out.append(MonthResult(
            month, len(group), sum(isinstance(d.plan, Plan) for d in group),
            max(float(d.vpp.load_kw.max()) for d in group), max(float(d.vpp.net_kw.max()) for d in group),
            max(float(d.window.net_kw.max()) for d in group), max(d.perfect_peak_kw for d in group)))
    return out
