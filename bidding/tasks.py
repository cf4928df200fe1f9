"""The business logic of each bidding task, as pure functions over typed values, and their artifact forms.

The worker pool (``vpp/bid_worker.py``) does the I/O around these: it reads a task's input
artifacts, calls the step's function here, checks the output (:func:`check_output`) and stores it
content-addressed. Nothing here reads a clock, a database or a setting, so a stored run replays
through today's logic exactly (``vpp bid replay``) and a backtest can re-run any step.

Values and their artifact kinds:

- :class:`RunInputs` (``inputs``): the asset (power, energy, state of charge, round trip, price
  region) and the interval the run bids for, with the market's step and the optimiser's horizon.
- :class:`MarketData` (``market``): the region's cleared prices before the interval (``fetch``).
  Prices come from ``market_prices`` at their own resolution; the interval's own price clears
  after gate closure, so only earlier intervals are market data.
- :class:`PriceForecast` (``forecast``): one product's mean and standard deviation per interval
  of the horizon (``forecast:<product>``): daily seasonal naive for energy, its spread from the
  day-over-day changes of the history; reserve from the generated reserve price rule
  (:func:`bidding.market.generated_reserve_prices`, SMARD has no reserve prices).
- :class:`~bidding.bids.Bid` (``bid``): the curves for the interval (``optimise``, ``safe_bid``).
- :class:`Submission` (``submission``): what the market accepted (``submit``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from bidding.bids import ENERGY, RESERVE, Band, Bid, IntervalBid, reserve_band, response_bands
from bidding.bids import safe_bid as hold_bid
from bidding.optimiser import Battery, optimise

PRODUCTS = (ENERGY, RESERVE)
DAY = timedelta(days=1)
RESERVE_BASE = 8.0
RESERVE_SPREAD_SHARE = 0.1
#: Decimal places of every number a task outputs: the same inputs give the same bytes, hence the same hash.
DIGITS = 4


class TaskInputError(ValueError):
    """A task cannot be done with the inputs it got (the task fails with this message, and is retried)."""


class MarketDataLateError(TaskInputError):
    """The market data does not reach the interval yet: the fetch fails and is retried until its deadline."""


@dataclass(frozen=True, slots=True)
class RunInputs:
    """The asset and the interval of one run (the ``inputs`` artifact every decision step reads)."""

    asset_id: str
    region: str
    interval_start: datetime
    step_s: int
    horizon_steps: int
    power_mw: float
    energy_mwh: float
    soc_mwh: float
    round_trip: float = 0.9
    degradation_eur_per_mwh: float = 1.0
    #: Charge power limit (MW) when it differs from ``power_mw`` (a VPP node's aggregate).
    charge_power_mw: float | None = None
    #: What the asset does anyway, net MW per interval of the horizon (+ discharge): a VPP node's
    #: aggregate plan (:mod:`bidding.node_asset`). Empty for a battery that does only what it bids.
    baseline_mw: tuple[float, ...] = ()
    #: What the sizing of the asset had to say (coverage derating, plan gaps); carried into the bid's note.
    notes: tuple[str, ...] = ()

    def battery(self) -> Battery:
        """The asset as the optimiser sees it."""
        return Battery(self.power_mw, self.energy_mwh, self.round_trip,
                       degradation_eur_per_mwh=self.degradation_eur_per_mwh, charge_mw=self.charge_power_mw)

    def baseline(self) -> np.ndarray | None:
        """The baseline over the horizon as an array (None without one)."""
        if not self.baseline_mw:
            return None
        if len(self.baseline_mw) != self.horizon_steps:
            raise TaskInputError(f"a baseline of {len(self.baseline_mw)} intervals for a horizon of "
                                 f"{self.horizon_steps}")
        return np.asarray(self.baseline_mw, dtype=np.float64)


@dataclass(frozen=True, slots=True)
class MarketData:
    """A region's cleared energy prices (EUR/MWh), one per step from ``first``, oldest first."""

    region: str
    first: datetime
    step_s: int
    prices: tuple[float, ...]

    @property
    def end(self) -> datetime:
        """The start of the first interval the data does not cover."""
        return self.first + len(self.prices) * timedelta(seconds=self.step_s)


@dataclass(frozen=True, slots=True)
class PriceForecast:
    """One product's forecast over the horizon from ``first``: mean and standard deviation per interval."""

    product: str
    first: datetime
    step_s: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    market_end: datetime


@dataclass(frozen=True, slots=True)
class Submission:
    """What the market accepted: the bid's artifact id and its intervals, at ``accepted_at``."""

    asset_id: str
    bid_id: str
    interval_starts: tuple[datetime, ...]
    accepted_at: datetime


def _round(values: Any) -> tuple[float, ...]:
    return tuple(round(float(v), DIGITS) for v in values)


# ---------------------------------------------------------------------------------------- the steps


def market_data(inputs: RunInputs, published: list[tuple[datetime, float]]) -> MarketData:
    """The ``fetch`` step: the region's prices before the interval, which must reach the interval.

    ``published`` are (interval start, price) rows of the region, oldest first. A gap at the end
    (the last interval before the run's is not published yet) is late data: :class:`MarketDataLateError`.
    """
    step = timedelta(seconds=inputs.step_s)
    rows = [(t, p) for t, p in published if t < inputs.interval_start]
    if not rows:
        when = inputs.interval_start.isoformat()
        raise MarketDataLateError(f"no market data for {inputs.region} before {when}")
    last = rows[-1][0]
    if last + step < inputs.interval_start:
        raise MarketDataLateError(f"market data for {inputs.region} ends at {(last + step).isoformat()}, "
                             f"before the interval {inputs.interval_start.isoformat()}")
    first = rows[0][0]
    count = int((last - first) / step) + 1
    values = np.full(count, np.nan)
    for t, p in rows:
        values[int((t - first) / step)] = p
    if np.isnan(values).any():  # a missing interval inside the history: carry the last price forward
        for i in range(1, count):
            if np.isnan(values[i]):
                values[i] = values[i - 1]
    return MarketData(inputs.region, first, inputs.step_s, _round(values))


def forecast(product: str, market: MarketData, inputs: RunInputs) -> PriceForecast:
    """A ``forecast:<product>`` step: mean and spread per interval of the horizon from the interval on."""
    step = timedelta(seconds=market.step_s)
    per_day = int(DAY / step)
    prices = np.asarray(market.prices, dtype=np.float64)
    if len(prices) < 2 * per_day:
        raise TaskInputError(f"{len(prices)} prices are less than the two days a forecast needs")
    targets = [inputs.interval_start + k * step for k in range(inputs.horizon_steps)]
    daily_change = np.abs(prices[per_day:] - prices[:-per_day])
    spread = float(np.mean(daily_change))
    if product == ENERGY:
        mean = []
        for target in targets:  # the same time of day on the latest day the data covers
            back = (target - market.end) // DAY + 1 if target >= market.end else 0
            index = int((target - back * DAY - market.first) / step)
            if index < 0:
                raise TaskInputError(f"market data from {market.first.isoformat()} cannot forecast "
                                     f"{target.isoformat()}")
            mean.append(float(prices[index]))
        std = [spread] * len(targets)
    elif product == RESERVE:
        last_day = prices[-per_day:]
        level = RESERVE_BASE + RESERVE_SPREAD_SHARE * float(np.max(last_day) - np.min(last_day))
        mean, std = [level] * len(targets), [RESERVE_SPREAD_SHARE * spread] * len(targets)
    else:
        raise TaskInputError(f"no forecast for product {product!r}")
    return PriceForecast(product, inputs.interval_start, market.step_s, _round(mean), _round(std), market.end)


def bid_for(inputs: RunInputs, energy: PriceForecast, reserve: PriceForecast | None) -> Bid:
    """The ``optimise`` step: the interval's energy curve from the forecast's uncertainty, and its reserve.

    The plan with reserve fixes the reserve held in the interval; the energy curve is the optimal
    response to the interval's price (:func:`bidding.bids.response_bands`) of the power left beside it.
    An asset with a baseline (a VPP node) is offered as the deviation from it: the energy curve's
    quantities are what the node does beyond its own plan, within its limits.
    """
    battery = inputs.battery()
    baseline = inputs.baseline()
    step_h = inputs.step_s / 3600
    mean = np.asarray(energy.mean, dtype=np.float64)
    std = np.asarray(energy.std, dtype=np.float64)
    curves: list[IntervalBid] = []
    held = 0.0
    if reserve is not None:
        plan = optimise(battery, mean, step_h, inputs.soc_mwh,
                        reserve_price=np.asarray(reserve.mean, dtype=np.float64), baseline_mw=baseline)
        held = round(float(plan.reserve_mw[0]), DIGITS)
        curves.append(reserve_band(plan, 0, inputs.interval_start))
    charge = None if battery.charge_mw is None else max(battery.charge_mw - held, 0.0)
    left = Battery(max(battery.power_mw - held, 0.0), battery.energy_mwh, battery.round_trip,
                   degradation_eur_per_mwh=battery.degradation_eur_per_mwh, charge_mw=charge)
    curve = response_bands(left, mean, std, step_h, inputs.soc_mwh, inputs.interval_start,
                           baseline_mw=baseline)
    curves.insert(0, curve)
    return Bid(inputs.asset_id, tuple(_rounded(c) for c in curves), "; ".join(inputs.notes))


def _rounded(curve: IntervalBid) -> IntervalBid:
    bands: list[Band] = []
    for band in curve.bands:
        price, quantity = round(band.price, DIGITS), round(band.quantity_mw, DIGITS)
        if bands and (price <= bands[-1].price or quantity < bands[-1].quantity_mw):
            continue  # rounding merged it into the band below
        bands.append(Band(price, quantity))
    return IntervalBid(curve.interval_start, curve.product, tuple(bands))


def safe_bid(inputs: RunInputs) -> Bid:
    """The ``safe_bid`` step: hold the state of charge (nothing bought or sold, no reserve)."""
    return hold_bid(inputs.asset_id, inputs.interval_start, "hold state of charge")


# ---------------------------------------------------------------------------------------- checks


def check_output(step: str, value: Any) -> None:
    """Raise ``ValueError`` if ``value`` is not what ``step`` must produce (the result's schema)."""
    expected: dict[str, type] = {"fetch": MarketData, "optimise": Bid, "safe_bid": Bid, "submit": Submission}
    kind = PriceForecast if step.startswith("forecast:") else expected.get(step)
    if kind is None or not isinstance(value, kind):
        raise ValueError(f"{step} produced {type(value).__name__}, not {getattr(kind, '__name__', kind)}")
    if isinstance(value, MarketData) and (not value.prices or not all(map(math.isfinite, value.prices))):
        raise ValueError("market data without finite prices")
    if isinstance(value, PriceForecast):
        if value.product != step.split(":", 1)[1]:
            raise ValueError(f"{step} produced a forecast of {value.product}")
        if not value.mean or len(value.mean) != len(value.std):
            raise ValueError("a forecast needs as many spreads as means")
        if not all(math.isfinite(v) for v in (*value.mean, *value.std)) or min(value.std) < 0:
            raise ValueError("a forecast's means and spreads must be finite, spreads not negative")
    if isinstance(value, Bid) and not value.intervals:
        raise ValueError("a bid without curves")


# ---------------------------------------------------------------------------------------- decoding


def _time(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise ValueError(f"naive time {text!r} in an artifact")
    return value


def _band(raw: dict[str, Any]) -> Band:
    return Band(float(raw["price"]), float(raw["quantity_mw"]))


def _curve(raw: dict[str, Any]) -> IntervalBid:
    bands = tuple(_band(b) for b in raw["bands"])
    return IntervalBid(_time(raw["interval_start"]), str(raw["product"]), bands)


def value_of(body: bytes | str) -> Any:
    """The typed value of an artifact's canonical JSON (inverse of :func:`bidding.artifacts.canonical`)."""
    raw = json.loads(body)
    kind = raw.get("__type__") if isinstance(raw, dict) else None
    if kind == "RunInputs":
        fields = {k: v for k, v in raw.items() if k != "__type__"}
        return RunInputs(**{**fields, "interval_start": _time(raw["interval_start"]),
                            "baseline_mw": tuple(fields.get("baseline_mw", ())),
                            "notes": tuple(fields.get("notes", ()))})
    if kind == "MarketData":
        return MarketData(raw["region"], _time(raw["first"]), int(raw["step_s"]), tuple(raw["prices"]))
    if kind == "PriceForecast":
        return PriceForecast(raw["product"], _time(raw["first"]), int(raw["step_s"]), tuple(raw["mean"]),
                             tuple(raw["std"]), _time(raw["market_end"]))
    if kind == "Bid":
        return Bid(raw["asset_id"], tuple(_curve(c) for c in raw["intervals"]), raw["note"])
    if kind == "Submission":
        return Submission(raw["asset_id"], raw["bid_id"], tuple(_time(t) for t in raw["interval_starts"]),
                          _time(raw["accepted_at"]))
    raise ValueError(f"not a bidding artifact: {kind!r}")


def kind_of(value: Any) -> str:
    """The artifact kind of a task value."""
    kinds = {RunInputs: "inputs", MarketData: "market", PriceForecast: "forecast", Bid: "bid",
             Submission: "submission"}
    return kinds[type(value)]


def bands_json(curve: IntervalBid) -> str:
    """A curve's bands as ``[[price, MW], ...]`` (the ``bids`` table's column)."""
    return json.dumps([[b.price, b.quantity_mw] for b in curve.bands], separators=(",", ":"))

