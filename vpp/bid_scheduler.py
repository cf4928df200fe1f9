"""The bid scheduler: one bidding run per configured asset in every slot of ``VPP_BID_EVERY_S`` (5 minutes).

``vpp bid schedule`` (started by ``vpp up``) asks, at the start of each slot, for a run of every asset
in ``VPP_BID_ASSETS`` (batteries, or VPP nodes as ``node:NODE_ID``) for the first interval whose
gate closes after the run's deadlines (:func:`bidding.cadence.slot_run`; with SMARD's hourly market
the later slots before an interval are its rebids). The run id follows from the asset and the slot
(``ASSET@INTERVAL#REBID``), and the Redis key ``bid:scheduled:{run id}`` (set if absent, with an
expiry) records that it was asked for, so a restarted scheduler asks for each run once and stores
one inputs artifact for it. A node that cannot be sized (no live aggregate, no site reporting) is
tried again every tick of the slot, the reason logged once per slot. With no assets configured
(the default) it starts nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import redis
from confluent_kafka import Producer

from bidding.cadence import slot_run
from bidding.node_asset import NodeUnavailableError
from core import keys
from core.bid_history import BidStore
from core.config import Settings
from core.history import HistoryStore
from vpp.bid_runs import Requested, request_run, run_inputs, workflow_id

log = logging.getLogger(__name__)
#: How long the scheduler's record of a run it asked for is kept (far beyond any run's gate closure).
SCHEDULED_TTL_S = 2 * 86400
#: Seconds between looks at the clock.
TICK_S = 1.0


def assets(settings: Settings) -> list[str]:
    """The configured asset ids (``VPP_BID_ASSETS``, comma-separated), in order, without duplicates."""
    seen: dict[str, None] = {}
    for part in settings.bid_assets.split(","):
        if part.strip():
            seen.setdefault(part.strip())
    return list(seen)


@dataclass
class Scheduler:
    """Asks the orchestrator for each configured asset's run of each slot, once."""

    settings: Settings
    store: BidStore
    history: HistoryStore
    producer: Producer
    client: redis.Redis
    #: Runs whose asset could not be sized, already logged (once per run, not every tick).
    unavailable: set[str] = field(default_factory=set)

    def lead(self) -> timedelta:
        """How far ahead of a slot its interval's gate must close: the run's deadlines and a margin."""
        s = self.settings
        return timedelta(seconds=s.bid_gate_lead_s + s.bid_forecast_deadline_s + 30)

    def market(self, now: datetime) -> tuple[str, timedelta] | None:
        """The price region and its market interval (None while no prices are published)."""
        region = self.settings.bid_region or next(iter(self.history.market_regions()), None)
        if region is None:
            return None
        recent = self.history.market_prices(region, now - timedelta(days=2), now + timedelta(days=2))
        return region, timedelta(minutes=recent[-1].interval_minutes if recent else 60)

    def tick(self, now: datetime | None = None) -> list[Requested]:
        """Ask for the slot's run of every asset not asked for yet; the runs asked for now."""
        now = now or datetime.now(UTC)
        configured = assets(self.settings)
        market = self.market(now) if configured else None
        if market is None:
            return []
        region, step = market
        slot = slot_run(now, timedelta(seconds=self.settings.bid_every_s), step, self.lead())
        self.unavailable &= {workflow_id(a, slot.interval_start, slot.rebid) for a in configured}
        asked: list[Requested] = []
        for asset_id in configured:
            ident = workflow_id(asset_id, slot.interval_start, slot.rebid)
            if self.client.exists(keys.bid_scheduled(ident)):
                continue
            try:
                run = run_inputs(self.settings, self.client, asset_id, region, slot.interval_start, step)
            except NodeUnavailableError as exc:
                if ident not in self.unavailable:
                    self.unavailable.add(ident)
                    log.warning("no run %s yet: %s", ident, exc)
                continue
            if not self.client.set(keys.bid_scheduled(ident), now.isoformat(), nx=True, ex=SCHEDULED_TTL_S):
                continue  # another scheduler asked in the meantime
            try:
                asked.append(request_run(self.settings, self.store, self.producer, self.client, run, now,
                                         slot.rebid))
            except Exception:
                self.client.delete(keys.bid_scheduled(ident))  # not asked after all: the next tick retries
                raise
            log.info("asked for %s%s", ident, f" ({'; '.join(run.notes)})" if run.notes else "")
        return asked

    def run(self, stop: Callable[[], bool] = lambda: False) -> None:
        """Tick until ``stop()``; a failed tick (a store away) is logged and tried again."""
        while not stop():
            try:
                self.tick()
            except Exception:
                log.exception("the bid scheduler's tick failed; trying again")
            time.sleep(TICK_S)
