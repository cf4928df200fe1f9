"""A market to bid into: the interface a real market adapter implements, and a pure simulator of it.

:class:`Market` is what the submit step talks to: bids are accepted until an interval's gate
closure (a later one is refused, never silently kept), a resubmission for the same asset,
interval and product replaces the earlier curve (a rebid: exactly one bid per interval
counts), and clearing reports what each asset was dispatched and paid.

:class:`SimulatedMarket` clears against a real price series at its own resolution (SMARD
day-ahead, hourly), read through :class:`PriceSource` so another feed (the live stack's
``market_prices`` table) can stand in. The asset is a price taker: its dispatch is its curve
evaluated at the cleared price. Reserve is paid for capacity held (EUR/MW/h); activations are
taken as energy-neutral and not simulated.

SMARD has no reserve prices, so :func:`generated_reserve_prices` makes them, deterministically
and documented: a capacity price of ``base`` EUR/MW/h plus ``spread_share`` of that (UTC) day's
energy price range, so reserve pays more on volatile days, roughly the level of German FCR in 2018.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

import numpy as np

from bidding.bids import ENERGY, RESERVE, Bid, IntervalBid
from forecast.series import Series


class PriceSource(Protocol):
    """Cleared prices per product and interval; ``None`` where the market has none."""

    @property
    def step(self) -> timedelta:
        """The market interval."""
        ...

    def price(self, product: str, interval_start: datetime) -> float | None:
        """The cleared price of ``product`` for the interval starting then."""
        ...


@dataclass(frozen=True, slots=True)
class SeriesPrices:
    """Prices from regular series, one per product (EUR/MWh for energy, EUR/MW/h for reserve)."""

    series: dict[str, Series]

    @property
    def step(self) -> timedelta:
        """The energy series' step."""
        return self.series[ENERGY].step

    def price(self, product: str, interval_start: datetime) -> float | None:
        series = self.series.get(product)
        if series is None:
            return None
        index, rest = divmod((interval_start - series.start).total_seconds(), series.step.total_seconds())
        if rest or not 0 <= index < len(series):
            return None
        value = float(series.values[int(index)])
        return value if np.isfinite(value) else None


def generated_reserve_prices(energy: Series, base: float = 8.0, spread_share: float = 0.1) -> Series:
    """Reserve prices (EUR/MW/h) from an energy series: ``base`` + ``spread_share`` x the day's range."""
    per_day = energy.per(timedelta(days=1))
    values = np.empty(len(energy))
    for first in range(0, len(energy), per_day):
        day = energy.values[first:first + per_day]
        values[first:first + per_day] = base + spread_share * float(np.nanmax(day) - np.nanmin(day))
    return Series(energy.start, energy.step, values, f"reserve(generated from {energy.name})", energy.tz)


class GateClosedError(ValueError):
    """A bid for an interval whose gate has closed: refused, so nothing is submitted late."""


@dataclass(frozen=True, slots=True)
class Clearing:
    """What one asset was dispatched and paid for one product in one interval."""

    asset_id: str
    interval_start: datetime
    product: str
    price: float
    quantity_mw: float
    revenue_eur: float


class Market(Protocol):
    """What the bidding workflow submits to and reads results from."""

    def gate_closure(self, interval_start: datetime) -> datetime:
        """The last moment a bid for the interval is accepted (exclusive)."""
        ...

    def submit(self, bid: Bid, now: datetime) -> None:
        """Accept every curve of ``bid`` or raise :class:`GateClosedError` (then none is kept)."""
        ...

    def clear(self, interval_start: datetime) -> list[Clearing]:
        """Clear the interval against its price: dispatch and revenue per asset and product."""
        ...


@dataclass(slots=True)
class SimulatedMarket:
    """A price-taking market over a :class:`PriceSource` with a fixed gate-closure lead."""

    prices: PriceSource
    gate_lead: timedelta = timedelta(minutes=5)
    _bids: dict[tuple[str, datetime, str], IntervalBid] = field(default_factory=dict)

    def gate_closure(self, interval_start: datetime) -> datetime:
        return interval_start - self.gate_lead

    def submit(self, bid: Bid, now: datetime) -> None:
        late = [c.interval_start for c in bid.intervals if now >= self.gate_closure(c.interval_start)]
        if late:
            closed = ", ".join(t.isoformat() for t in late)
            raise GateClosedError(f"gate closed for {closed} at {now.isoformat()}")
        for curve in bid.intervals:
            self._bids[(bid.asset_id, curve.interval_start, curve.product)] = curve

    def clear(self, interval_start: datetime) -> list[Clearing]:
        step_h = self.prices.step.total_seconds() / 3600
        out: list[Clearing] = []
        for (asset_id, start, product), curve in sorted(self._bids.items(), key=lambda kv: kv[0]):
            if start != interval_start:
                continue
            price = self.prices.price(product, start)
            if price is None:
                continue
            quantity = curve.quantity_at(price)
            if product == RESERVE:
                quantity = max(quantity, 0.0)
            out.append(Clearing(asset_id, start, product, price, quantity, price * quantity * step_h))
        return out
