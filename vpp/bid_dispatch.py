"""Cleared quantities of a VPP node become dispatch requests to the control dataflow.

When the market clears a node's energy bid (``node:{id}`` assets, :mod:`bidding.node_asset`), the
cleared quantity is a deviation from what the fleet does anyway (its aggregate plan, the run's
baseline). The control dataflow steers a node's total battery power, so the dispatch asks for the
baseline plus the deviation, from the node, over the market interval, through :mod:`core.dispatch`
(the same checks as ``vpp dispatch`` and the API). Its id names the node and the interval
(:func:`bidding.node_asset.dispatch_id`): a clearing done again (a worker that died between the
dispatch and writing ``market_results`` clears the interval again) sends a request the client
refuses as a reused id (the control dataflow refuses it too if both arrive at once), so one
clearing dispatches once. Reserve clears capacity held, not energy: no dispatch.

The baseline is read from the run's own ``inputs`` artifact (the sizing it bid from), the first
one stored for the run when it was asked for more than once (the orchestrator ran that one).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

import redis
from confluent_kafka import Producer

from bidding.bids import ENERGY
from bidding.node_asset import dispatch_for, node_of
from bidding.tasks import RunInputs, value_of
from core import dispatch
from core.bid_history import BidStore
from core.config import Settings
from core.dispatch_spec import DispatchConflictError, DispatchRejectedError, DispatchSpec
from core.rows import MarketResultRow

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Dispatched:
    """What became of the node clearings of one round: ids sent, ids already sent, refusals with reasons."""

    sent: tuple[str, ...] = ()
    already: tuple[str, ...] = ()
    refused: tuple[tuple[str, str], ...] = ()


class ClearedDispatcher:
    """Send the dispatches of cleared node bids (called by the market before it records the results)."""

    def __init__(self, settings: Settings, client: redis.Redis, producer: Producer, store: BidStore) -> None:
        self.settings = settings
        self.client = client
        self.producer = producer
        self.store = store

    def baseline_mw(self, workflow_id: str) -> float | None:
        """The first interval's baseline of the run that bid (None if its inputs are not stored)."""
        stored = sorted((a for a in self.store.run_artifacts(workflow_id) if a.kind == "inputs"),
                        key=lambda a: a.created_at)
        for row in stored:
            value = value_of(row.content)
            if isinstance(value, RunInputs):
                return value.baseline_mw[0] if value.baseline_mw else 0.0
        return None

    def __call__(self, results: list[MarketResultRow], step: timedelta) -> Dispatched:
        """Dispatch every cleared energy quantity of a node among ``results`` (intervals of ``step``)."""
        sent: list[str] = []
        already: list[str] = []
        refused: list[tuple[str, str]] = []
        for row in results:
            node_id = node_of(row.asset_id)
            if node_id is None or row.product != ENERGY:
                continue
            baseline = self.baseline_mw(row.workflow_id)
            if baseline is None:
                refused.append((row.workflow_id, "the run's inputs are not stored: no baseline"))
                continue
            order = dispatch_for(node_id, row.interval_start, step, row.quantity_mw, baseline)
            if order is None:
                continue
            spec = DispatchSpec(order.target_kw, order.start, order.end, node_id=order.node_id,
                                dispatch_id=order.dispatch_id)
            try:
                dispatch.submit(self.settings, spec, f"bidding:{row.workflow_id}", self.client, self.producer)
            except DispatchConflictError:
                already.append(order.dispatch_id)
            except DispatchRejectedError as exc:
                refused.append((order.dispatch_id, str(exc)))
            else:
                sent.append(order.dispatch_id)
        for ident, reason in refused:
            log.warning("cleared node bid not dispatched (%s): %s", ident, reason)
        return Dispatched(tuple(sent), tuple(already), tuple(refused))
