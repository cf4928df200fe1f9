"""The simulated market: gate closure, rebids replace, clearing against the real price series."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from bidding.bids import ENERGY, PRICE_FLOOR, RESERVE, Band, Bid, IntervalBid
from bidding.market import GateClosedError, SeriesPrices, SimulatedMarket, generated_reserve_prices
from forecast.series import Series

T0 = datetime(2018, 3, 5, tzinfo=UTC)
HOUR = timedelta(hours=1)


def market() -> SimulatedMarket:
    energy = Series(T0, HOUR, np.array([20.0, 60.0, -5.0] + [30.0] * 45))
    return SimulatedMarket(SeriesPrices({ENERGY: energy, RESERVE: generated_reserve_prices(energy)}))


def curve(start: datetime, sell: float = 1.0) -> IntervalBid:
    return IntervalBid(start, ENERGY, (Band(PRICE_FLOOR, -1.0), Band(10.0, 0.0), Band(50.0, sell)))


def test_clears_curves_against_the_price_of_their_interval() -> None:
    m = market()
    m.submit(Bid("b1", tuple(curve(T0 + i * HOUR) for i in range(3))), T0 - HOUR)
    assert [(c.quantity_mw, c.revenue_eur) for c in m.clear(T0)] == [(0.0, 0.0)]  # 20: between the bands
    assert [(c.quantity_mw, c.revenue_eur) for c in m.clear(T0 + HOUR)] == [(1.0, 60.0)]
    assert [(c.quantity_mw, c.revenue_eur) for c in m.clear(T0 + 2 * HOUR)] == [(-1.0, 5.0)]  # paid to buy


def test_refuses_bids_after_gate_closure_and_keeps_none_of_them() -> None:
    m = market()
    with pytest.raises(GateClosedError):
        m.submit(Bid("b1", (curve(T0 + HOUR), curve(T0))), T0 - timedelta(minutes=5))
    assert m.clear(T0 + HOUR) == []


def test_a_rebid_replaces_the_earlier_curve_so_one_bid_counts_per_interval() -> None:
    m = market()
    m.submit(Bid("b1", (curve(T0 + HOUR, sell=1.0),)), T0)
    m.submit(Bid("b1", (curve(T0 + HOUR, sell=0.5),)), T0 + timedelta(minutes=30))
    assert [c.quantity_mw for c in m.clear(T0 + HOUR)] == [0.5]


def test_generated_reserve_prices_follow_the_daily_spread() -> None:
    energy = Series(T0, HOUR, np.concatenate([np.full(24, 30.0), np.linspace(0, 100, 24)]))
    reserve = generated_reserve_prices(energy, base=8.0, spread_share=0.1)
    assert reserve.values[0] == 8.0 and reserve.values[30] == pytest.approx(18.0)
