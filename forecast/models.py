"""Forecast models behind one interface: ``fit(history)`` once, ``forecast(history, horizon)`` often.

A fit estimates parameters from the history it is given and nothing else. Its
``forecast`` takes the history up to the forecast origin, which may be longer
than the history it was fitted on (newer observations since the last refit):
each model advances its state over them with the parameters it already has, so
issuing a forecast from a cached fit is cheap and a refit runs on a schedule.

Every forecast carries a mean and a standard deviation per step; quantiles are
Gaussian around the mean (``Forecast.quantile``), which is what the bidding and
peak decisions read as the uncertainty band.

- :class:`SeasonalNaive`: the value one season ago (same slot last week).
- :class:`PriceNaive`: last week's value for Monday, Saturday and Sunday
  targets, yesterday's otherwise (the price-forecasting literature's naive).
- :class:`MstlAr`: MSTL removes the daily and weekly seasons; an AR model on
  what is left, seasons carried forward from their last cycle.
- :class:`HoltWinters`: additive Holt-Winters exponential smoothing.
- :class:`Sarimax`: ARMA errors around a regression on calendar drivers
  (Fourier terms of the local hour, day-type dummies), known ahead for any target.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from statistics import NormalDist
from typing import Protocol

import numpy as np
import numpy.typing as npt

from forecast.clean import InsufficientHistoryError, require_history
from forecast.series import DAY, WEEK, Array, Series

QUANTILES = (0.1, 0.5, 0.9)


@dataclass(frozen=True, slots=True)
class Forecast:
    """``horizon`` values from step ``origin`` of the history's index (the first target is ``origin``)."""

    origin: int
    mean: Array
    std: Array
    model: str
    note: str = ""

    def quantile(self, level: float) -> Array:
        """The Gaussian ``level`` quantile per step."""
        z = NormalDist().inv_cdf(level)
        out: Array = self.mean + z * self.std
        return out

    def quantiles(self, levels: tuple[float, ...] = QUANTILES) -> dict[float, Array]:
        """Several quantiles at once, keyed by level."""
        return {level: self.quantile(level) for level in levels}


class Fitted(Protocol):
    """A model with its parameters estimated: forecast from any history that extends the fitted one."""

    def forecast(self, history: Series, horizon: int) -> Forecast:
        """The next ``horizon`` steps after the end of ``history``."""
        ...


class Model(Protocol):
    """A forecasting method: ``fit`` sees only the history it is given."""

    @property
    def name(self) -> str:
        """What reports and stored forecasts call the model."""
        ...

    def fit(self, history: Series) -> Fitted:
        """Estimate the parameters from ``history``."""
        ...


# ---------------------------------------------------------------------------------------- naive

LagRule = Callable[[Series, int, int], npt.NDArray[np.int64]]
"""Lag in steps for each of ``count`` target indices from ``first``."""


def _fixed_lag(span: timedelta) -> LagRule:
    def rule(series: Series, first: int, count: int) -> npt.NDArray[np.int64]:
        return np.full(count, series.per(span), dtype=np.int64)
    return rule


def _price_lag(series: Series, first: int, count: int) -> npt.NDArray[np.int64]:
    weekday, _ = series.local_calendar(first, count)
    week_back = np.isin(weekday, (0, 5, 6))  # Monday, Saturday, Sunday: last week's day
    return np.where(week_back, series.per(WEEK), series.per(DAY)).astype(np.int64)


@dataclass(frozen=True, slots=True)
class _NaiveFit:
    name: str
    rule: LagRule
    sigma: float

    def forecast(self, history: Series, horizon: int) -> Forecast:
        n = len(history)
        lags = self.rule(history, n, horizon)
        values = np.concatenate([history.values, np.empty(horizon)])
        depth = np.zeros(n + horizon, dtype=np.int64)
        for i, lag in enumerate(lags, start=n):
            if lag > i:
                raise InsufficientHistoryError(
                    f"{self.name}: history of {n} steps is shorter than the lag {lag}")
            values[i] = values[i - lag]
            depth[i] = depth[i - lag] + 1
        std = self.sigma * np.sqrt(depth[n:].astype(np.float64))
        return Forecast(n, values[n:], std, self.name)


def _naive_sigma(history: Series, rule: LagRule, window: int) -> float:
    """Standard deviation of the rule's one-season errors over the last ``window`` steps."""
    n = len(history)
    first = max(0, n - window)
    lags = rule(history, first, n - first)
    index = np.arange(first, n)
    ok = index - lags >= 0
    errors = history.values[index[ok]] - history.values[index[ok] - lags[ok]]
    errors = errors[np.isfinite(errors)]
    return float(np.std(errors)) if len(errors) > 1 else 0.0


@dataclass(frozen=True, slots=True)
class SeasonalNaive:
    """Same slot one season ago (a week by default): the baseline every load forecast must beat."""

    season: timedelta = WEEK
    name: str = "naive"

    def fit(self, history: Series) -> Fitted:
        rule = _fixed_lag(self.season)
        return _NaiveFit(self.name, rule, _naive_sigma(history, rule, 4 * history.per(WEEK)))


@dataclass(frozen=True, slots=True)
class PriceNaive:
    """Last week's price for Monday, Saturday and Sunday; yesterday's otherwise (local calendar)."""

    name: str = "naive"

    def fit(self, history: Series) -> Fitted:
        return _NaiveFit(self.name, _price_lag, _naive_sigma(history, _price_lag, 4 * history.per(WEEK)))


@dataclass(frozen=True, slots=True)
class _FlaggedFit:
    fitted: Fitted
    note: str

    def forecast(self, history: Series, horizon: int) -> Forecast:
        forecast = self.fitted.forecast(history, horizon)
        return Forecast(forecast.origin, forecast.mean, forecast.std, forecast.model, self.note)


@dataclass(frozen=True, slots=True)
class OrNaive:
    """``model``, or ``naive`` flagged as a fallback when the history is too short for ``model``.

    The flag travels on every forecast (``Forecast.note``) so a reader never mistakes
    the fallback for the model.
    """

    model: Model
    naive: Model

    @property
    def name(self) -> str:
        """The wrapped model's name: the fallback is visible in each forecast's note."""
        return self.model.name

    def fit(self, history: Series) -> Fitted:
        try:
            return self.model.fit(history)
        except InsufficientHistoryError as exc:
            return _FlaggedFit(self.naive.fit(history), f"naive fallback for {self.model.name}: {exc}")


# ---------------------------------------------------------------------------------------- AR helpers


def _ar_forecast(recent: Array, const: float, phi: dict[int, float], sigma2: float,
                 horizon: int) -> tuple[Array, Array]:
    """Mean and standard deviation of an AR model with sparse lags, from its last values."""
    width = max(phi) if phi else 0
    buf = np.concatenate([recent[-width:] if width else np.empty(0), np.empty(horizon)])
    for t in range(width, width + horizon):
        buf[t] = const + sum(coef * buf[t - lag] for lag, coef in phi.items())
    psi = np.zeros(horizon)
    psi[0] = 1.0
    for j in range(1, horizon):
        psi[j] = sum(coef * psi[j - lag] for lag, coef in phi.items() if lag <= j)
    std = np.sqrt(sigma2 * np.cumsum(psi**2))
    return buf[width:], std


def _fit_ar(y: Array, lags: tuple[int, ...]) -> tuple[float, dict[int, float], float]:
    """Least-squares AR with a constant on the given lags: (constant, {lag: coefficient}, sigma2)."""
    from statsmodels.tsa.ar_model import AutoReg

    result = AutoReg(y, lags=list(lags), trend="c").fit()
    params = np.asarray(result.params, dtype=np.float64)
    phi = dict(zip(lags, (float(p) for p in params[1:]), strict=True))
    return float(params[0]), phi, float(result.sigma2)


# ---------------------------------------------------------------------------------------- MSTL + AR


@dataclass(frozen=True, slots=True)
class _MstlFit:
    name: str
    fit_end: int
    profiles: tuple[Array, ...]
    const: float
    phi: dict[int, float]
    sigma2: float

    def seasonal(self, first: int, count: int) -> Array:
        """The seasons at absolute steps ``first..first+count``, each carried by its last fitted cycle."""
        index = np.arange(first, first + count)
        total = np.zeros(count)
        for profile in self.profiles:
            total += profile[(index - self.fit_end) % len(profile)]
        return total

    def forecast(self, history: Series, horizon: int) -> Forecast:
        n = len(history)
        width = max(self.phi)
        recent = history.values[n - width:] - self.seasonal(n - width, width)
        mean, std = _ar_forecast(recent, self.const, self.phi, self.sigma2, horizon)
        return Forecast(n, mean + self.seasonal(n, horizon), std, self.name)


@dataclass(frozen=True, slots=True)
class MstlAr:
    """MSTL daily and weekly seasons (each as the mean of its cycles), an AR model on the rest.

    ``lags`` are in steps; ``window`` is how much recent history the fit uses.
    """

    lags: tuple[int, ...] = (1, 2, 3)
    window: timedelta = timedelta(weeks=8)
    periods: tuple[timedelta, ...] = (DAY, WEEK)
    name: str = "mstl"

    def fit(self, history: Series) -> Fitted:
        from statsmodels.tsa.seasonal import MSTL

        require_history(history)
        y = history.values[-history.per(self.window):]
        periods = [history.per(p) for p in self.periods]
        seasonal = np.asarray(MSTL(y, periods=periods).fit().seasonal, dtype=np.float64).reshape(len(y), -1)
        # Each season's shape is the mean of its cycles in the window: STL's last cycle alone bends
        # towards the latest noise, which then repeats as if it were seasonal and leaves nothing for
        # the AR to carry forward.
        profiles = tuple(seasonal[len(y) - (len(y) // p) * p:, j].reshape(-1, p).mean(axis=0)
                         for j, p in enumerate(periods))
        partial = _MstlFit(self.name, len(history), profiles, 0.0, {}, 0.0)
        rest = y - partial.seasonal(len(history) - len(y), len(y))
        const, phi, sigma2 = _fit_ar(rest, self.lags)
        return _MstlFit(self.name, len(history), profiles, const, phi, sigma2)


# ---------------------------------------------------------------------------------------- Holt-Winters


@dataclass(frozen=True, slots=True)
class _HoltWintersFit:
    name: str
    fit_end: int
    alpha: float
    gamma: float
    level: float
    season: Array  # the last `period` seasonal states, oldest first
    sigma2: float

    def forecast(self, history: Series, horizon: int) -> Forecast:
        n = len(history)
        period = len(self.season)
        level, season = self.level, list(self.season)
        for y in history.values[self.fit_end:n]:  # advance the state over observations since the fit
            s_old = season[-period]
            new_level = self.alpha * (y - s_old) + (1 - self.alpha) * level
            season.append(self.gamma * (y - level) + (1 - self.gamma) * s_old)
            level = new_level
        last = np.asarray(season[-period:])
        steps = np.arange(1, horizon + 1)
        mean = level + last[(steps - 1) % period]
        k = (steps - 1) // period
        var = self.sigma2 * (1 + self.alpha**2 * (steps - 1) + self.gamma * k * (2 * self.alpha + self.gamma))
        return Forecast(n, mean, np.sqrt(var), self.name)


@dataclass(frozen=True, slots=True)
class HoltWinters:
    """Additive Holt-Winters (level and one season, weekly by default) on recent history."""

    season: timedelta = WEEK
    window: timedelta = timedelta(weeks=4)
    name: str = "holt-winters"

    def fit(self, history: Series) -> Fitted:
        from statsmodels.tsa.holtwinters import ExponentialSmoothing

        require_history(history)
        y = history.values[-history.per(self.window):]
        period = history.per(self.season)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence chatter; the backtest judges the result
            result = ExponentialSmoothing(y, trend=None, seasonal="add", seasonal_periods=period,
                                          initialization_method="heuristic").fit()
        params = result.params
        season = np.asarray(result.season, dtype=np.float64)[-period:]
        return _HoltWintersFit(self.name, len(history), float(params["smoothing_level"]),
                               float(params["smoothing_seasonal"]), float(np.asarray(result.level)[-1]),
                               season, float(result.sse) / len(y))


# ---------------------------------------------------------------------------------------- SARIMAX

Drivers = Callable[[Series, int, int], Array]
"""Exogenous drivers known ahead for ``count`` steps from index ``first``: one row per step."""


def calendar_drivers(daily_harmonics: int = 6, weekend_harmonics: int = 3) -> Drivers:
    """Fourier terms of the local hour, Saturday/Sunday/Monday dummies, and a weekend daily shape."""

    def drivers(series: Series, first: int, count: int) -> Array:
        weekday, hour = series.local_calendar(first, count)
        angle = 2 * np.pi * hour / 24.0
        columns = []
        for k in range(1, daily_harmonics + 1):
            columns += [np.sin(k * angle), np.cos(k * angle)]
        weekend = (weekday >= 5).astype(np.float64)
        for k in range(1, weekend_harmonics + 1):
            columns += [weekend * np.sin(k * angle), weekend * np.cos(k * angle)]
        for day in (0, 5, 6):
            columns.append((weekday == day).astype(np.float64))
        return np.column_stack(columns)

    return drivers


def lag_drivers(lags: tuple[timedelta, ...] = (DAY, WEEK), calendar: Drivers | None = None) -> Drivers:
    """The series' own values ``lag`` ago (yesterday's and last week's same slot), plus ``calendar``.

    Known ahead for every target up to the shortest lag; a longer horizon is refused.
    """

    def drivers(series: Series, first: int, count: int) -> Array:
        columns = []
        for lag in lags:
            steps = series.per(lag)
            index = np.arange(first, first + count) - steps
            if index.max() >= len(series):
                raise ValueError(f"a lag of {lag} is not known {count} steps ahead")
            columns.append(np.where(index >= 0, series.values[np.clip(index, 0, None)], np.nan))
        own = np.column_stack(columns)
        return np.column_stack([own, calendar(series, first, count)]) if calendar else own

    return drivers


def _with_constant(drivers: Drivers, series: Series, first: int, count: int) -> Array:
    return np.column_stack([np.ones(count), drivers(series, first, count)])


def _known_rows(y: Array, exog: Array) -> tuple[Array, Array]:
    """Drop leading rows whose drivers are not known (a lag reaching before the history)."""
    known = np.flatnonzero(np.isfinite(exog).all(axis=1))
    first = int(known[0]) if len(known) else len(y)
    if len(known) != len(y) - first:
        raise ValueError("drivers are missing inside the window, not only at its start")
    return y[first:], exog[first:]


@dataclass(frozen=True, slots=True)
class _SarimaxFit:
    name: str
    result: object
    drivers: Drivers
    window: int

    def forecast(self, history: Series, horizon: int) -> Forecast:
        n = len(history)
        first = max(0, n - self.window)
        y, exog = _known_rows(history.values[first:], _with_constant(self.drivers, history, first, n - first))
        applied = self.result.apply(y, exog=exog)  # type: ignore[attr-defined]
        prediction = applied.get_forecast(horizon, exog=_with_constant(self.drivers, history, n, horizon))
        return Forecast(n, np.asarray(prediction.predicted_mean, dtype=np.float64),
                        np.asarray(prediction.se_mean, dtype=np.float64), self.name)


@dataclass(frozen=True, slots=True)
class Sarimax:
    """SARIMAX: a regression on drivers known ahead (calendar by default) with ARMA(p, q) errors.

    The regression coefficients are estimated by least squares and held fixed, so
    the likelihood search is only over the few ARMA parameters and a forecast from
    a cached fit is a Kalman filter pass over the recent window.
    """

    order: tuple[int, int, int] = (2, 0, 1)
    drivers: Drivers = field(default_factory=lambda: lag_drivers(calendar=calendar_drivers(0, 0)))
    window: timedelta = timedelta(weeks=4)
    name: str = "sarimax"

    def fit(self, history: Series) -> Fitted:
        from statsmodels.tsa.statespace.sarimax import SARIMAX

        require_history(history)
        n = len(history)
        window = history.per(self.window)
        first = max(0, n - window)
        y, exog = _known_rows(history.values[first:], _with_constant(self.drivers, history, first, n - first))
        beta = np.linalg.lstsq(exog, y, rcond=None)[0]
        model = SARIMAX(y, exog=exog, order=self.order)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence chatter; the backtest judges the result
            with model.fix_params(dict(zip(model.exog_names, (float(b) for b in beta), strict=True))):
                result = model.fit(disp=False)
        return _SarimaxFit(self.name, result, self.drivers, window)
