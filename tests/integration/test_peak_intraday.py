"""``vpp peak run``'s executor on the real broker, Redis and history server: a load above the forecast.

The node's live aggregate is written here as the telemetry flow would write it
(the fleet follows each dispatch exactly), on a clock the test moves: the
evening comes in 12% above the forecast from 18:00. The executor must notice it, re-plan
the rest of the day on a higher threshold, record the re-plan in
``peak_events``, and send dispatches on ``dispatch.requests`` that follow the
measured load rather than the day-ahead schedule. The control dataflow is not
running: the test reports each dispatch it sees as the flow would (its status
hash), so that the executor may replace it. The whole run through the real
control and telemetry flows is ``test_peak_closed_loop.py`` (slow).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import redis
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from core import history, kafka, keys
from core.config import Settings
from core.topics import DISPATCH_REQUESTS
from peak.intraday import Tolerances
from peak.planner import LoadForecast, Plan
from schemas import packaged_codec
from vpp.peak_intraday import STEP, DayExecutor

pytestmark = pytest.mark.integration

POWER_KW, ENERGY_KWH = 15.0, 30.0


def evening(n: int = 96) -> np.ndarray:
    hour = np.arange(n) * 24 / n
    return 60.0 + 40.0 * np.exp(-((hour - 18.5) ** 2) / 2)


def requests_of(settings: Settings, prefix: str, expected: int) -> list[dict[str, object]]:
    """Every DispatchRequest whose id starts with ``prefix``, in order, once at least ``expected`` came."""
    consumer = Consumer(kafka.client_config(settings, **{"group.id": f"t-{uuid.uuid4()}",
                                                         "enable.auto.commit": False}))
    partitions = kafka.admin(settings).list_topics(DISPATCH_REQUESTS, timeout=10).topics[DISPATCH_REQUESTS]
    consumer.assign([TopicPartition(DISPATCH_REQUESTS, p, OFFSET_BEGINNING) for p in partitions.partitions])
    codec = packaged_codec()
    found: list[dict[str, object]] = []
    try:
        for _ in range(120):
            for message in consumer.consume(num_messages=500, timeout=0.5):
                value = message.value()
                if message.error() is None and value is not None:
                    record = codec.decode(value, expected="DispatchRequest")
                    if str(record["dispatch_id"]).startswith(prefix):
                        found.append(record)
            if len(found) >= expected:
                break
    finally:
        consumer.close()
    return found


def test_a_load_above_the_forecast_is_followed_replanned_and_recorded(stack_settings: Settings) -> None:
    node = f"feeder-{uuid.uuid4().hex[:8]}"
    day = datetime.now(UTC).date() + timedelta(days=1)  # windows ahead of the wall clock: judged at start
    day_start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    forecast = evening()
    actual = forecast.copy()
    actual[72:] *= 1.12  # from 18:00 the load is 12% above the forecast
    live = redis.Redis.from_url(stack_settings.redis)
    client = history.connect(stack_settings)
    now = [day_start + timedelta(hours=17)]
    battery = {"kw": 0.0, "kwh": ENERGY_KWH}
    sent_ids: list[str] = []
    try:
        history.apply_ddl(client)
        store = history.HistoryStore(client, stack_settings.clickhouse_database)
        live.sadd(keys.node_sites(node), "site-a", "site-b")
        predicted = LoadForecast(day_start, STEP, forecast, np.zeros(96), "test")
        executor = DayExecutor(stack_settings, live, store, node, day, lambda: ("run-1", predicted),
                               clock=lambda: now[0], tolerances=Tolerances(), lead=timedelta(0))
        net_by_interval: dict[int, float] = {}
        for tick in range(2 * 16):  # 17:00-21:00, two readings an interval
            now[0] = day_start + timedelta(hours=17) + tick * STEP / 2
            k = executor.intraday.index(now[0])
            load = float(actual[k])
            live.hset(keys.node(node), mapping={
                "grid_kw": load - battery["kw"], "battery_kw": battery["kw"], "coverage": 1.0,
                "est_available_discharge_kw": POWER_KW, "est_available_charge_kw": POWER_KW,
                "est_energy_available_kwh": battery["kwh"],
                "est_charge_headroom_kwh": ENERGY_KWH - battery["kwh"],
                "event_time": int(now[0].timestamp() * 1000)})
            executor.tick()
            for ident in executor.dispatched:  # the control flow would report each dispatch it got
                sent_ids.append(ident)
                live.hset(keys.dispatch_status(ident), mapping={"state": "PENDING"})
            sent = executor.intraday.sent.get(k)
            battery["kw"] = sent[1] if sent else 0.0  # the fleet follows the dispatch of the interval
            power = battery["kw"]
            battery["kwh"] -= power * 0.125 / 0.95 if power > 0 else power * 0.125 * 0.95
            net_by_interval[k] = load - power

        replans = executor.intraday.replans
        assert any("off the plan's" in b.reason for b in replans), [b.reason for b in replans]
        first, moved = replans[0].plan, next(b.plan for b in replans if "off the plan's" in b.reason)
        assert isinstance(first, Plan) and isinstance(moved, Plan)
        assert moved.threshold_kw > first.threshold_kw + 1.0

        requests = requests_of(stack_settings, executor.plan_id, len(executor.dispatched))
        assert {r["dispatch_id"] for r in requests} == set(executor.dispatched)
        assert {r["action"] for r in requests} <= {"CREATE", "REPLACE"}
        last = {str(r["dispatch_id"]): float(r["target_kw"]) for r in requests}  # type: ignore[arg-type]
        # The dispatches follow the measured load: not the day-ahead schedule for the same intervals...
        base = replans[0].first
        day_ahead = {f"{executor.plan_id}-{day_start + (base + i) * STEP:%H%M}":
                     float(first.discharge_kw[i] - first.charge_kw[i])
                     for i in range(len(first.discharge_kw))}
        assert max(abs(kw - day_ahead.get(ident, 0.0)) for ident, kw in last.items()) > 1.0
        # ...and they hold the net load at the threshold in force while the fleet has power and energy.
        peak_net = max(net_by_interval.values())
        assert peak_net < float(actual.max()) - 5.0, "the evening was shaved"
        assert peak_net <= moved.threshold_kw + 1.0

        [row] = store.peak_events(node, day_start, day_start + timedelta(days=1))
        in_force = executor.intraday.in_force
        assert in_force is not None and isinstance(in_force.plan, Plan)
        assert row.status == "planned" and row.threshold_kw == in_force.plan.threshold_kw
        assert "off the plan's" in row.note and row.note.count("planned at") == len(replans)
    finally:
        live.delete(keys.node(node), keys.node_sites(node), *(keys.dispatch_status(i) for i in sent_ids))
        live.close()
        client.close()
