"""``vpp backtest``: replay stored bidding decisions through today's logic and say what would change.

For every run whose optimise step finished in the window, the stored inputs (the run's inputs
artifact and the forecasts it optimised on, from ``workflow_artifacts``) go through today's
:func:`bidding.tasks.bid_for`; the new bid's hash is compared with the stored one, and both bids
are cleared at the interval's published price (``market_prices``; reserve by the generated rule)
to compare revenue. With unchanged logic every decision is reproduced exactly.

With a model (``--with-model NAME``, :mod:`bidding.remodel`) the run's energy forecast is made
again by that model from the market data the run fetched (its ``market`` artifact; the reserve
forecast stays as stored), and the bid decided from it is compared the same way: what that model
would have bid and earned against what was done. A run whose market data is not among its own
artifacts (it decided on another run's fallback data) or that the model cannot forecast for is
reported with the reason and no replayed bid.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from bidding.artifacts import artifact
from bidding.bids import Bid
from bidding.market import SimulatedMarket
from bidding.remodel import reforecast
from bidding.tasks import MarketData, PriceForecast, RunInputs, TaskInputError, bid_for, value_of
from bidding.workflow import OPTIMISE
from core.bid_history import BidStore
from core.history import HistoryStore
from core.rows import BacktestReportRow
from forecast.models import Model
from vpp.bid_market import day_prices


@dataclass(frozen=True, slots=True)
class Replayed:
    """One stored decision and today's: their artifact ids and what each would have earned (EUR)."""

    workflow_id: str
    interval_start: datetime
    stored: str
    replayed: str
    stored_revenue_eur: float | None
    replayed_revenue_eur: float | None
    #: Why nothing was replayed (``replayed`` is then empty), else empty.
    note: str = ""

    @property
    def identical(self) -> bool:
        """True when today's logic decides the very same bid."""
        return self.stored == self.replayed


def _revenue(history: HistoryStore, run: RunInputs, bid: Bid) -> float | None:
    prices = day_prices(history, run.region, run.interval_start)
    if prices is None:
        return None
    market = SimulatedMarket(prices, timedelta(0))
    market.submit(bid, run.interval_start - timedelta(seconds=1))
    return sum(c.revenue_eur for c in market.clear(run.interval_start))


def backtest(store: BidStore, history: HistoryStore, start: datetime, end: datetime,
             model: Model | None = None) -> list[Replayed]:
    """Every optimise decision that finished in [start, end), replayed through today's logic.

    With ``model`` the energy forecast is re-made by it from the run's own market data first.
    """
    out: list[Replayed] = []
    for record in store.done_steps(OPTIMISE, start, end):
        assert record.output is not None
        values = {row.artifact_id: value_of(row.content) for row in store.run_artifacts(record.workflow_id)}
        run = next((v for v in values.values() if isinstance(v, RunInputs)), None)
        forecasts = {v.product: v for v in values.values() if isinstance(v, PriceForecast)}
        stored = values.get(record.output)
        if run is None or "energy" not in forecasts or not isinstance(stored, Bid):
            continue
        energy = forecasts["energy"]
        if model is not None:
            market = next((v for v in values.values() if isinstance(v, MarketData)), None)
            try:
                if market is None:
                    raise TaskInputError("the run decided on another run's market data (a fallback)")
                energy = reforecast(model, market, run)
            except TaskInputError as exc:
                out.append(Replayed(record.workflow_id, run.interval_start, record.output, "",
                                    _revenue(history, run, stored), None, str(exc)))
                continue
        bid = bid_for(run, energy, forecasts.get("reserve"))
        again = artifact("bid", bid).artifact_id
        out.append(Replayed(record.workflow_id, run.interval_start, record.output, again,
                            _revenue(history, run, stored), _revenue(history, run, bid)))
    return out


def decision_rows(replayed: list[Replayed]) -> list[dict[str, object]]:
    """Each replayed decision as a JSON-ready row (the CLI's --json and the stored report)."""
    return [{"workflow_id": r.workflow_id, "interval_start": r.interval_start.isoformat(),
             "identical": r.identical, "stored": r.stored, "replayed": r.replayed,
             "stored_revenue_eur": r.stored_revenue_eur, "replayed_revenue_eur": r.replayed_revenue_eur,
             "note": r.note}
            for r in replayed]


def report(replayed: list[Replayed], start: datetime, end: datetime, now: datetime) -> BacktestReportRow:
    """The ``backtest_reports`` row of one backtest; revenues summed over decisions priced both ways."""
    priced = [r for r in replayed if r.stored_revenue_eur is not None and r.replayed_revenue_eur is not None]
    return BacktestReportRow(
        f"backtest-{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}", now, start, end, len(replayed),
        sum(not r.identical for r in replayed), sum(r.stored_revenue_eur or 0.0 for r in priced),
        sum(r.replayed_revenue_eur or 0.0 for r in priced), json.dumps(decision_rows(replayed)))
