"""Bids as the market sees them: price-quantity bands per interval and product (NEM style).

An :class:`IntervalBid` is a monotone step curve with at most ten bands: at a clearing price
``p`` the asset delivers the quantity of the last band whose price is at most ``p`` (net MW,
positive = sell/discharge, negative = buy/charge; for reserve, MW of capacity). Band prices
rise strictly and quantities never fall, so a higher price never asks the asset for less.
The first band starts at the market's price floor, so the curve answers every price.

:func:`energy_bands` turns the optimiser's schedule into such a curve: stored energy is worth
its water value ``w`` (EUR/MWh, the dual of the state-of-charge balance), so the battery sells
when the price beats ``w / eta + degradation`` and buys when it is below ``w * eta -
degradation``, up to what its power and state of charge allow in that interval. The curve
therefore responds to the price that actually clears, where a schedule would not.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np

from bidding.optimiser import Array, Battery, Plan, optimise

MAX_BANDS = 10
PRICE_FLOOR = -500.0  # EUR/MWh, the day-ahead market's technical minimum (EPEX)
ENERGY = "energy"
RESERVE = "reserve"


@dataclass(frozen=True, slots=True)
class Band:
    """At clearing prices of ``price`` or more, deliver ``quantity_mw``."""

    price: float
    quantity_mw: float


@dataclass(frozen=True, slots=True)
class IntervalBid:
    """One product's curve for the interval starting at ``interval_start`` (UTC)."""

    interval_start: datetime
    product: str
    bands: tuple[Band, ...]

    def __post_init__(self) -> None:
        if not 1 <= len(self.bands) <= MAX_BANDS:
            raise ValueError(f"a bid has 1 to {MAX_BANDS} bands, got {len(self.bands)}")
        for low, high in zip(self.bands, self.bands[1:], strict=False):
            if not high.price > low.price or high.quantity_mw < low.quantity_mw:
                raise ValueError(f"bands must rise in price and never fall in quantity: {self.bands}")

    def quantity_at(self, price: float) -> float:
        """What the curve delivers when ``price`` clears (nothing below the first band's price)."""
        quantity = 0.0
        for band in self.bands:
            if band.price > price:
                break
            quantity = band.quantity_mw
        return quantity


@dataclass(frozen=True, slots=True)
class Bid:
    """Everything one workflow submits for an asset: one curve per interval and product."""

    asset_id: str
    intervals: tuple[IntervalBid, ...]
    note: str = ""


def energy_bands(battery: Battery, plan: Plan, t: int, step_h: float, soc_mwh: float,
                 interval_start: datetime) -> IntervalBid:
    """The energy curve for interval ``t`` of ``plan`` from state of charge ``soc_mwh``."""
    held = battery.reserve_sustain_h * float(plan.reserve_mw[t])
    headroom = max(battery.power_mw - float(plan.reserve_mw[t]), 0.0)
    charge_headroom = max(battery.charge_limit_mw - float(plan.reserve_mw[t]), 0.0)
    sell = min(headroom, max(soc_mwh - battery.soc_min_mwh - held, 0.0) * battery.eta / step_h)
    buy = min(charge_headroom, max(battery.energy_mwh - held - soc_mwh, 0.0) / (battery.eta * step_h))
    water = float(plan.water_value[t])
    deg = battery.degradation_eur_per_mwh
    buy_below = water * battery.eta - deg
    sell_from = water / battery.eta + deg
    bands = [Band(PRICE_FLOOR, -buy)]
    if buy_below > PRICE_FLOOR:
        bands.append(Band(buy_below, 0.0))
    if sell_from > bands[-1].price:
        bands.append(Band(sell_from, sell))
    return IntervalBid(interval_start, ENERGY, tuple(bands))


def reserve_band(plan: Plan, t: int, interval_start: datetime) -> IntervalBid:
    """The reserve capacity the plan holds in interval ``t``, offered at any non-negative price."""
    offered = float(plan.reserve_mw[t])
    return IntervalBid(interval_start, RESERVE, (Band(PRICE_FLOOR, 0.0), Band(0.0, offered)))


def safe_bid(asset_id: str, interval_start: datetime, reason: str) -> Bid:
    """Hold the state of charge: nothing bought or sold at any price, no reserve offered."""
    hold = IntervalBid(interval_start, ENERGY, (Band(PRICE_FLOOR, 0.0),))
    return Bid(asset_id, (hold,), f"safe bid: {reason}")


QUANTILE_Z = (-1.645, -1.036, -0.524, 0.0, 0.524, 1.036, 1.645)  # 5%, 15%, 30%, 50%, 70%, 85%, 95%


def response_bands(battery: Battery, mean: Array, std: Array, step_h: float, soc_mwh: float,
                   interval_start: datetime, *, soc_end_min_mwh: float = 0.0,
                   persistence: float = 0.9, baseline_mw: Array | None = None) -> IntervalBid:
    """The next interval's curve from the forecast's uncertainty: the optimal response at each quantile.

    The first interval's price is set to each quantile of its forecast in turn (the rest stay at
    their means) and the plan re-solved (the LP is compiled once, so a re-solve is only numbers);
    the net quantity it then chooses is the curve's quantity from midway between that quantile and
    the one below. A linear programme's response to its own price never falls as the price rises,
    so the curve is monotone (a running maximum removes solver noise). Equal neighbours merge, so
    the curve has at most ``len(QUANTILE_Z)`` bands.

    With ``baseline_mw`` (what a VPP node's fleet does anyway, per interval) the quantities are the
    deviation from the first interval's baseline: the market is offered only the flexibility around
    it, never what the fleet does regardless (:func:`bidding.optimiser.optimise` on the totals).
    """
    levels = [float(mean[0] + z * std[0]) for z in QUANTILE_Z]
    quantities: list[float] = []
    for level in levels:
        surprise = level - float(mean[0])
        prices = np.asarray(mean, dtype=np.float64) + surprise * persistence ** np.arange(len(mean))
        plan = optimise(battery, prices, step_h, soc_mwh, soc_end_min_mwh=soc_end_min_mwh,
                        baseline_mw=baseline_mw)
        net = float(plan.discharge_mw[0] - plan.charge_mw[0])
        if baseline_mw is not None:
            net -= float(baseline_mw[0])
        net = round(net, 4)
        quantities.append(max([net, *quantities[-1:]]))
    bands = [Band(PRICE_FLOOR, quantities[0])]
    for below, level, quantity in zip(levels, levels[1:], quantities[1:], strict=False):
        if quantity > bands[-1].quantity_mw:
            bands.append(Band(max((below + level) / 2, bands[-1].price + 1e-6), quantity))
    return IntervalBid(interval_start, ENERGY, tuple(bands))
