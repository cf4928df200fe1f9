"""A VPP node bid on the real stack: sized from Redis, cleared by the simulated market, dispatched once.

The session's stack (broker, Redis, history server) and the real control dataflow as a process. A
node's live aggregate, aggregate plan and member sites' twins are written to Redis as the telemetry
and plans dataflows would; the run's inputs come from them (``vpp.bid_runs.run_inputs``), the
node's curve is booked in the market before gate closure, the market clears it at the real
(replayed SMARD) price of the interval, and the cleared deviation becomes a dispatch request for
the node (baseline + deviation) that the control dataflow takes up. Clearing the interval again
(a worker that died before recording the results) does not dispatch twice. The bid scheduler asks
for one run per asset and slot, and a restarted one asks for none of them again.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from bench.bidding_stack import BidStack
from bidding import journal
from bidding.artifacts import artifact
from bidding.bids import ENERGY, PRICE_FLOOR, Band, Bid, IntervalBid
from bidding.cadence import slot_run, slot_start
from bidding.node_asset import dispatch_id, node_asset
from bidding.tasks import RunInputs, value_of
from core import kafka, keys
from core.bid_history import artifact_row
from core.config import Settings
from core.live import text
from core.rows import MarketResultRow
from core.topics import DISPATCH_REQUESTS
from schemas import packaged_codec
from vpp.bid_dispatch import ClearedDispatcher, Dispatched
from vpp.bid_market import StoredMarket
from vpp.bid_runs import read_journal, run_inputs, workflow_id
from vpp.bid_scheduler import Scheduler
from vpp.dataflows import dataflow_argv, settings_env

pytestmark = pytest.mark.integration

REGION = "bidnode-DE"
NODE = "bidnode-feeder-1"
SITES = [f"bidnode-site-{i}" for i in range(4)]
HOUR = timedelta(hours=1)


def _now_ms() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)


def _write_fleet(client: redis.Redis, interval: datetime) -> None:
    """What the telemetry and plans dataflows would hold for a node of four online 5 kW / 13.5 kWh sites."""
    now = _now_ms()
    client.sadd(keys.node_sites(NODE), *SITES)
    for site in SITES:
        client.hset(keys.site(site), mapping={
            "status": "ONLINE", "battery_kw": 1.0, "last_seen": now, "max_discharge_kw": 5.0,
            "max_charge_kw": 5.0, "energy_available_kwh": 6.0, "charge_headroom_kwh": 6.0, "solar_kw": 0.0,
            "load_kw": 1.0, "active_command_id": "", "event_time": now})
    client.hset(keys.node(NODE), mapping={
        "node_id": NODE, "node_kind": "feeder", "event_time": now, "coverage": 1.0, "reporting_sites": 4,
        "expected_sites": 4, "available_discharge_kw": 20.0, "available_charge_kw": 20.0,
        "energy_available_kwh": 24.0, "charge_headroom_kwh": 24.0})
    quarters = 4 * 30
    client.hset(keys.node_plan(NODE), mapping={
        "node_id": NODE, "hierarchy": "electrical", "start_ms": int(interval.timestamp() * 1000),
        "interval_minutes": 15, "steps": quarters, "planned_kw": json.dumps([4.0] * quarters),
        "coverage": json.dumps([1.0] * quarters), "expected_sites": 4, "computed_at": now})


@pytest.fixture(scope="module")
def control_flow(stack_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The control dataflow as a process on the session's stack (its log in the returned file)."""
    log = tmp_path_factory.mktemp("bidnode") / "control.log"
    with log.open("wb") as out:
        process = subprocess.Popen(dataflow_argv("control", stack_settings),
                                   env={**os.environ, **settings_env(stack_settings)},
                                   stdout=out, stderr=subprocess.STDOUT)
    yield log
    process.kill()
    process.wait()


def _requests_for(settings: Settings, ident: str) -> list[dict[str, object]]:
    """Every DispatchRequest on ``dispatch.requests`` under the dispatch id ``ident``."""
    config = kafka.client_config(settings, **{"group.id": "bidnode-test", "enable.auto.commit": False})
    consumer = Consumer(config)
    try:
        partitions = consumer.list_topics(DISPATCH_REQUESTS, timeout=10).topics[DISPATCH_REQUESTS].partitions
        ends = {p: consumer.get_watermark_offsets(TopicPartition(DISPATCH_REQUESTS, p), 10)[1]
                for p in partitions}
        consumer.assign([TopicPartition(DISPATCH_REQUESTS, p, OFFSET_BEGINNING) for p in ends if ends[p]])
        seen: dict[int, int] = {}
        found: list[dict[str, object]] = []
        deadline = time.monotonic() + 120
        while any(seen.get(p, -1) + 1 < end for p, end in ends.items() if end) \
                and time.monotonic() < deadline:
            for message in consumer.consume(500, 0.5):
                if message.error() is not None:
                    continue
                seen[message.partition() or 0] = message.offset() or 0
                if message.key() == ident.encode():
                    found.append(packaged_codec().decode(message.value() or b"", "DispatchRequest"))
        return found
    finally:
        consumer.close()


def test_a_cleared_node_bid_becomes_one_dispatch_the_control_dataflow_takes_up(
        stack_settings: Settings, tmp_path: Path, control_flow: Path) -> None:
    harness = BidStack(stack_settings, tmp_path)  # its clients only: no orchestrator or worker needed
    harness.publish_prices(REGION)
    interval = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)  # started, not ended
    _write_fleet(harness.redis, interval)

    # The run's inputs: the node sized from its aggregate, its baseline the plan (4 kW = 0.004 MW).
    run = run_inputs(stack_settings, harness.redis, node_asset(NODE), REGION, interval, HOUR)
    assert (run.power_mw, run.charge_power_mw, run.soc_mwh, run.energy_mwh) == (0.02, 0.02, 0.024, 0.048)
    assert run.baseline_mw[0] == pytest.approx(0.004) and not run.notes
    ident = workflow_id(run.asset_id, interval)
    booked_at = interval - timedelta(seconds=stack_settings.bid_gate_lead_s + 60)  # before gate closure
    inputs = artifact("inputs", run)
    harness.store.put_artifacts([artifact_row(inputs, ident, "request", booked_at)])

    # The node offers 10 kW beyond its plan at any price (a curve the optimiser could have made).
    bid = Bid(run.asset_id, (IntervalBid(interval, ENERGY, (Band(PRICE_FLOOR, 0.01),)),))
    dispatched: list[Dispatched] = []
    dispatcher = ClearedDispatcher(stack_settings, harness.redis,
                                   Producer(kafka.client_config(stack_settings)), harness.store)

    def on_cleared(rows: list[MarketResultRow], step: timedelta) -> None:
        dispatched.append(dispatcher(rows, step))

    market = StoredMarket(harness.store, harness.history, timedelta(seconds=stack_settings.bid_gate_lead_s),
                          on_cleared=on_cleared)
    market.submit_for(bid, booked_at, REGION, ident, artifact("bid", bid).artifact_id)
    cleared = market.clear(interval)
    assert [(r.asset_id, r.product, r.quantity_mw) for r in cleared] == [(run.asset_id, ENERGY, 0.01)]
    expected_id = dispatch_id(NODE, interval)
    assert dispatched[-1].sent == (expected_id,), dispatched

    # The control dataflow takes it up: the node's total is the baseline plus the cleared deviation.
    deadline = time.monotonic() + 90
    status: dict[str, str] = {}
    while time.monotonic() < deadline:
        raw = harness.redis.hgetall(keys.dispatch_status(expected_id))
        status = {text(k): text(v) for k, v in raw.items()}
        if status.get("state") in ("ACTIVE", "COMPLETED", "PARTIAL"):
            break
        time.sleep(0.5)
    assert status.get("state") in ("ACTIVE", "COMPLETED", "PARTIAL"), \
        (status, control_flow.read_text()[-3000:])
    assert float(status["target_kw"]) == pytest.approx(14.0)
    assert status["node_id"] == NODE and status["requested_by"] == f"bidding:{ident}"
    assert int(status["start"]) == int(interval.timestamp() * 1000)
    assert int(status["end"]) == int((interval + HOUR).timestamp() * 1000)

    # The same clearing handed over again (a worker killed after dispatching, before it recorded the
    # results, clears the interval again): no second dispatch.
    again = dispatcher(cleared, HOUR)
    assert again.already == (expected_id,) and not again.sent
    requests = _requests_for(stack_settings, expected_id)
    assert len(requests) == 1 and requests[0]["action"] == "CREATE", requests
    harness.stop()


def test_the_scheduler_asks_for_each_assets_run_of_a_slot_once_even_when_restarted(
        stack_settings: Settings, tmp_path: Path) -> None:
    """One run per asset per 5-minute slot, its id from asset and slot; a restart asks for none again."""
    harness = BidStack(stack_settings, tmp_path)
    harness.publish_prices(REGION)
    # Early in the slot holding the wall clock, so that `now + 30 s` below is still the same slot.
    now = slot_start(datetime.now(UTC), timedelta(seconds=stack_settings.bid_every_s)) + timedelta(seconds=5)
    _write_fleet(harness.redis, now.replace(minute=0, second=0, microsecond=0))
    settings = stack_settings.model_copy(update={
        "bid_assets": f"{node_asset(NODE)}, sched-battery, node:bidnode-unknown, sched-battery",
        "bid_region": REGION})

    def scheduler() -> Scheduler:
        return Scheduler(settings, harness.store, harness.history, harness.producer, harness.redis)

    first = scheduler().tick(now)
    assert [r.workflow_id.split("@")[0] for r in first] == [node_asset(NODE), "sched-battery"]
    slot = slot_run(now, timedelta(seconds=settings.bid_every_s), HOUR, scheduler().lead())
    assert {r.workflow_id for r in first} == {workflow_id(a, slot.interval_start, slot.rebid)
                                             for a in (node_asset(NODE), "sched-battery")}
    assert all(r.start.gate_closure > now for r in first)
    assert scheduler().tick(now + timedelta(seconds=30)) == []  # the same slot, a restarted scheduler
    later = scheduler().tick(now + timedelta(seconds=settings.bid_every_s))  # the next slot: its own runs
    assert len(later) == 2 and not {r.workflow_id for r in later} & {r.workflow_id for r in first}

    asked = {r.workflow_id for r in first}
    requested = Counter(e.workflow_id for e in read_journal(settings)
                        if e.event_type == journal.REQUESTED and e.workflow_id in asked)
    assert requested == Counter({r.workflow_id: 1 for r in first})
    node_run = next(r for r in first if r.workflow_id.startswith("node:"))
    stored = harness.store.artifacts([node_run.inputs_id])[node_run.inputs_id]
    sized = value_of(stored.content)
    assert isinstance(sized, RunInputs) and sized.baseline_mw and sized.charge_power_mw == 0.02
    harness.stop()
