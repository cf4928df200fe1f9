"""Asking for bidding runs and reading them back: the library under ``vpp bid`` (and the tests and bench).

- :func:`request_run` stores the run's inputs artifact (the asset and the interval) and writes a
  ``requested`` entry on ``workflow.events``; the orchestrator (``dataflows.bidding``) starts the run.
  The run id names the asset, the interval and a rebid number, so asking twice for the same run is
  one run (the second Start is ignored, and journaled as such).
- :func:`read_journal` reads a run's entries from ``workflow.events`` (the local broker keeps them
  in memory only, as long as it runs); :func:`bidding.journal.replay_entries` folds them.
- :func:`replay_optimise` re-runs the optimise step from its stored input artifacts through today's
  logic and compares the output's hash with the stored one (what a backtest does for every step).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import redis
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from bidding import journal
from bidding.artifacts import artifact
from bidding.node_asset import NodeAvailability, NodeBaseline, node_of, size_node
from bidding.tasks import PRODUCTS, PriceForecast, RunInputs, bid_for, value_of
from bidding.workflow import OPTIMISE, Start, Workflow
from core import kafka, keys
from core.bid_history import BidStore, artifact_row
from core.config import Settings
from core.live import text
from core.topics import WORKFLOW_EVENTS
from schemas import packaged_codec


def workflow_id(asset_id: str, interval_start: datetime, rebid: int = 0) -> str:
    """The id of the run that bids ``asset_id`` into the interval (``rebid`` counts resubmissions)."""
    return f"{asset_id}@{interval_start.astimezone(UTC):%Y%m%dT%H%MZ}#{rebid}"


def next_interval(now: datetime, step: timedelta, lead: timedelta) -> datetime:
    """The first interval (on the step's grid) whose gate closes at least ``lead`` from now."""
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    earliest = now + lead
    steps = math.ceil((earliest - epoch) / step)
    return epoch + steps * step


def run_inputs(settings: Settings, client: redis.Redis, asset_id: str, region: str, interval_start: datetime,
               step: timedelta, *, power_mw: float = 1.0, energy_mwh: float = 2.0,
               soc_mwh: float | None = None) -> RunInputs:
    """The inputs of a run for ``asset_id``: a battery of the given figures, or a VPP node sized now.

    A node asset (``node:{id}``, :mod:`bidding.node_asset`) is sized from its live aggregate
    (``node:{id}``) and its aggregate plan (``plan:node:{id}``) as they stand when the run is asked
    for, and that sizing is the run's ``inputs`` artifact: stored content-addressed before the run
    starts, so a replay or backtest decides from the very numbers the run decided from.
    Raises :class:`bidding.node_asset.NodeUnavailableError` for a node that cannot be sized.
    """
    step_s = int(step.total_seconds())
    horizon = settings.bid_horizon_steps
    node_id = node_of(asset_id)
    if node_id is None:
        return RunInputs(asset_id, region, interval_start, step_s, horizon, power_mw, energy_mwh,
                         energy_mwh / 2 if soc_mwh is None else soc_mwh)
    pipe = client.pipeline(transaction=False)
    pipe.hgetall(keys.node(node_id))
    pipe.hgetall(keys.node_plan(node_id))
    aggregate, plan = ({text(k): text(v) for k, v in raw.items()} for raw in pipe.execute())
    sized = size_node(NodeAvailability.from_fields(node_id, aggregate), NodeBaseline.from_fields(plan),
                      interval_start, step_s, horizon, now=datetime.now(UTC))
    return RunInputs(asset_id, region, interval_start, step_s, horizon, sized.power_mw, sized.energy_mwh,
                     sized.soc_mwh, charge_power_mw=sized.charge_mw, baseline_mw=sized.baseline_mw,
                     notes=sized.notes)


@dataclass(frozen=True, slots=True)
class Requested:
    """A run asked for: its id, its Start, and the inputs artifact."""

    workflow_id: str
    start: Start
    inputs_id: str


def start_for(settings: Settings, run: RunInputs, inputs_id: str, now: datetime, last_good: str | None,
              rebid: int = 0) -> Start:
    """The Start of a run with the configured deadlines (relative to ``now``) and the market's gate."""
    return Start(workflow_id(run.asset_id, run.interval_start, rebid), run.interval_start,
                 fetch_deadline=now + timedelta(seconds=settings.bid_fetch_deadline_s),
                 forecast_deadline=now + timedelta(seconds=settings.bid_forecast_deadline_s),
                 gate_closure=run.interval_start - timedelta(seconds=settings.bid_gate_lead_s),
                 products=PRODUCTS, inputs=(inputs_id,), last_good_market=last_good,
                 max_attempts=settings.bid_max_attempts, task_timeout_s=settings.bid_task_timeout_s)


def request_run(settings: Settings, store: BidStore, producer: Producer, client: redis.Redis, run: RunInputs,
                now: datetime | None = None, rebid: int = 0) -> Requested:
    """Store the run's inputs and ask the orchestrator for the run (flushed before this returns)."""
    now = now or datetime.now(UTC)
    made = artifact("inputs", run)
    ident = workflow_id(run.asset_id, run.interval_start, rebid)
    store.put_artifacts([artifact_row(made, ident, "request", now)])
    last = client.get(keys.bid_last_market(run.region))
    last_good = last.decode() if isinstance(last, bytes) else last
    start = start_for(settings, run, made.artifact_id, now, last_good, rebid)
    value = packaged_codec().encode("WorkflowEvent", {
        "workflow_id": ident, "seq": -1, "step": "start", "event_type": journal.REQUESTED, "event_time": now,
        "payload_json": journal.request_payload(start), "artifact_id": made.artifact_id})
    producer.produce(WORKFLOW_EVENTS, key=ident.encode(), value=value)
    if producer.flush(30) != 0:
        raise RuntimeError("the run request was not delivered within 30 s")
    return Requested(ident, start, made.artifact_id)


def read_journal(settings: Settings, ident: str | None = None,
                 timeout_s: float = 30.0) -> list[journal.Entry]:
    """Every entry on ``workflow.events`` (of run ``ident`` when given), in the topic's order per run."""
    consumer = Consumer(kafka.client_config(settings, **{"group.id": "vpp-bid-journal-reader",
                                                         "enable.auto.commit": False}))
    try:
        metadata = consumer.list_topics(WORKFLOW_EVENTS, timeout=timeout_s).topics[WORKFLOW_EVENTS]
        ends: dict[int, int] = {}
        for partition in metadata.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(WORKFLOW_EVENTS, partition), timeout_s)
            if high > low:
                ends[partition] = high
        consumer.assign([TopicPartition(WORKFLOW_EVENTS, p, OFFSET_BEGINNING) for p in ends])
        decode = packaged_codec().decode
        entries: list[journal.Entry] = []
        positions = dict.fromkeys(ends, -1)
        deadline = datetime.now(UTC) + timedelta(seconds=timeout_s)
        while any(positions[p] + 1 < ends[p] for p in ends) and datetime.now(UTC) < deadline:
            for message in consumer.consume(1000, 0.5):
                if message.error() is not None or message.value() is None:
                    continue
                positions[message.partition() or 0] = message.offset() or 0
                if ident is not None and message.key() != ident.encode():
                    continue
                record = decode(message.value() or b"", "WorkflowEvent")
                entries.append(journal.Entry(record["workflow_id"], record["seq"], record["event_type"],
                                             record["event_time"], journal.loads(record["payload_json"]),
                                             record["step"], record["artifact_id"]))
        return entries
    finally:
        consumer.close()


def runs(entries: list[journal.Entry]) -> dict[str, Workflow]:
    """The state of every run the entries mention, replayed from its journal."""
    by_run: dict[str, list[journal.Entry]] = {}
    for entry in entries:
        by_run.setdefault(entry.workflow_id, []).append(entry)
    return {ident: journal.replay_entries(ident, own) for ident, own in by_run.items()}


@dataclass(frozen=True, slots=True)
class OptimiseReplay:
    """The optimise step re-run from its stored inputs: the stored and the recomputed output ids."""

    stored: str
    recomputed: str

    @property
    def identical(self) -> bool:
        """True when today's logic gives the very same bytes."""
        return self.stored == self.recomputed


def replay_optimise(store: BidStore, state: Workflow) -> OptimiseReplay | None:
    """Re-run a run's optimise step from its stored input artifacts; None if the run never optimised."""
    task = state.task(OPTIMISE)
    if task is None or task.output is None:
        return None
    stored = store.artifacts(list(task.inputs))
    values = [value_of(stored[i].content) for i in task.inputs]
    run = next(v for v in values if isinstance(v, RunInputs))
    forecasts = {v.product: v for v in values if isinstance(v, PriceForecast)}
    bid = bid_for(run, forecasts["energy"], forecasts.get("reserve"))
    return OptimiseReplay(task.output, artifact("bid", bid).artifact_id)
