"""The simulated market the submit step talks to, with its order book in ClickHouse (``bids``).

:class:`StoredMarket` implements :class:`bidding.market.Market`, the interface a real market
adapter implements: a bid is accepted until the interval's gate closure (later it raises
:class:`~bidding.market.GateClosedError` and nothing of it is kept), a rebid for the same asset,
interval and product replaces the earlier curve (the ``bids`` table is a ReplacingMergeTree on
exactly that), so the book survives a crashed worker and a submit done twice counts once.
Clearing reuses :class:`~bidding.market.SimulatedMarket` against the region's published prices
(``market_prices``, the SMARD series the local market feed replays) and writes ``market_results``;
reserve is priced by :func:`bidding.market.generated_reserve_prices`'s rule (SMARD has no reserve
prices).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from bidding.bids import ENERGY, RESERVE, Band, Bid, IntervalBid
from bidding.market import GateClosedError, SimulatedMarket
from bidding.tasks import RESERVE_BASE, RESERVE_SPREAD_SHARE, bands_json
from core.bid_history import BidStore
from core.history import HistoryStore
from core.rows import BidRow, MarketResultRow


@dataclass(frozen=True, slots=True)
class _DayPrices:
    """A PriceSource over one region's published prices of the days around an interval."""

    prices: dict[datetime, float]
    step_: timedelta

    @property
    def step(self) -> timedelta:
        return self.step_

    def price(self, product: str, interval_start: datetime) -> float | None:
        energy = self.prices.get(interval_start)
        if product == ENERGY or energy is None:
            return energy
        if product != RESERVE:
            return None
        day = interval_start.replace(hour=0, minute=0, second=0, microsecond=0)
        values = [p for t, p in self.prices.items() if day <= t < day + timedelta(days=1)]
        return RESERVE_BASE + RESERVE_SPREAD_SHARE * float(np.max(values) - np.min(values))


def day_prices(history: HistoryStore, region: str, interval_start: datetime) -> _DayPrices | None:
    """The region's published prices of the interval's (UTC) day, if the interval's price is among them."""
    day = interval_start.replace(hour=0, minute=0, second=0, microsecond=0)
    published = history.market_prices(region, day, day + timedelta(days=1))
    if not any(p.interval_start == interval_start for p in published):
        return None
    step = timedelta(minutes=published[0].interval_minutes)
    return _DayPrices({p.interval_start: p.price_eur_mwh for p in published}, step)


@dataclass(slots=True)
class StoredMarket:
    """A simulated market whose accepted bids live in ``bids``, cleared at each price region's prices."""

    bids: BidStore
    history: HistoryStore
    gate_lead: timedelta
    #: The region a plain :meth:`submit` books under (the protocol's bid carries none).
    region: str = ""
    #: Called with each region's clearing rows and the market's step before they are recorded (a VPP
    #: node's cleared energy becomes a dispatch: :class:`vpp.bid_dispatch.ClearedDispatcher`). Before,
    #: so a crash in between clears (and dispatches, idempotently) again rather than never.
    on_cleared: Callable[[list[MarketResultRow], timedelta], Any] | None = None

    def gate_closure(self, interval_start: datetime) -> datetime:
        return interval_start - self.gate_lead

    def submit(self, bid: Bid, now: datetime) -> None:
        self.submit_for(bid, now, self.region, "", "")

    def submit_for(self, bid: Bid, now: datetime, region: str, workflow_id: str, artifact_id: str) -> None:
        """Accept every curve of ``bid`` (recorded with its region, run and artifact) or none of them."""
        late = [c.interval_start for c in bid.intervals if now >= self.gate_closure(c.interval_start)]
        if late:
            closed = ", ".join(t.isoformat() for t in late)
            raise GateClosedError(f"gate closed for {closed} at {now.isoformat()}")
        self.bids.put_bids([BidRow(bid.asset_id, c.interval_start, c.product, region, workflow_id,
                                   bands_json(c), bid.note, artifact_id, now) for c in bid.intervals])

    def clear(self, interval_start: datetime) -> list[MarketResultRow]:
        """Clear the interval's accepted bids at their regions' prices; the rows written to market_results."""
        # bids' interval_start is whole seconds (DateTime), so one second past the start selects it
        booked = [r for r in self.bids.bids_due(interval_start + timedelta(seconds=1))
                  if r.interval_start == interval_start]
        results: list[MarketResultRow] = []
        now = datetime.now(UTC)
        for region in sorted({r.region for r in booked}):
            simulated = self._simulated(region, interval_start)
            if simulated is None:
                continue
            rows = [r for r in booked if r.region == region]
            workflows = {(r.asset_id, r.product): r.workflow_id for r in rows}
            in_time = self.gate_closure(interval_start) - timedelta(microseconds=1)  # as accepted
            for row in rows:
                bands = tuple(Band(float(p), float(q)) for p, q in json.loads(row.bands_json))
                curve = IntervalBid(row.interval_start, row.product, bands)
                simulated.submit(Bid(row.asset_id, (curve,)), in_time)
            cleared = [MarketResultRow(c.asset_id, c.interval_start, c.product, c.price, c.quantity_mw,
                                       c.revenue_eur, workflows[(c.asset_id, c.product)], now)
                       for c in simulated.clear(interval_start)]
            if self.on_cleared is not None:
                self.on_cleared(cleared, simulated.prices.step)
            results += cleared
        self.bids.put_results(results)
        return results

    def _simulated(self, region: str, interval_start: datetime) -> SimulatedMarket | None:
        """A simulated market over the region's published prices of the interval's day, if it has one."""
        prices = day_prices(self.history, region, interval_start)
        return None if prices is None else SimulatedMarket(prices, self.gate_lead)

    def clear_due(self, now: datetime) -> int:
        """Clear every started interval with bids and no results; how many result rows were written."""
        starts = sorted({r.interval_start for r in self.bids.bids_due(now)})
        return sum(len(self.clear(start)) for start in starts)
