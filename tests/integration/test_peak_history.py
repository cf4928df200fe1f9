"""peak_events (schemas/clickhouse/070_peak.sql) on the history server: a measured day replaces its plan."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from core import history
from core.config import Settings
from core.rows import PeakEvent

pytestmark = pytest.mark.integration

DAY = datetime(2026, 3, 1, 23, tzinfo=UTC)


def test_a_measured_day_replaces_its_planned_row(stack_settings: Settings) -> None:
    client = history.connect(stack_settings)
    try:
        assert "vpp.peak_events" in history.apply_ddl(client)
        store = history.HistoryStore(client, stack_settings.clickhouse_database)
        node = f"feeder-{uuid.uuid4().hex[:8]}"
        planned = PeakEvent(node, DAY, "p1", "planned", 100.0, 88.0, float("nan"), float("nan"), 0.0, 0.0,
                            False, "", DAY)
        done = replace(planned, status="completed", actual_peak_kw=88.5, counterfactual_peak_kw=101.0,
                       energy_delivered_kwh=12.5, energy_recharged_kwh=13.0,
                       recorded_at=DAY + timedelta(days=1))
        store.insert_peak_events([planned])
        store.insert_peak_events([done])
        assert store.peak_events(node, DAY, DAY + timedelta(days=1)) == [done]
    finally:
        client.close()


def test_a_node_day_is_planned_from_its_stored_forecast_and_live_fleet(stack_settings: Settings) -> None:
    import redis

    from core import keys
    from core.rows import ForecastPoint, ForecastRunRow
    from peak.planner import NoEvent, Plan
    from vpp.peak_service import plan_node

    node = f"feeder-{uuid.uuid4().hex[:8]}"
    client = history.connect(stack_settings)
    live = redis.Redis.from_url(stack_settings.redis)
    try:
        history.apply_ddl(client)
        store = history.HistoryStore(client, stack_settings.clickhouse_database)
        day = DAY.date()
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        missing = plan_node(store, live, node, day)
        assert isinstance(missing.plan, NoEvent) and "no load forecast" in missing.plan.reason
        issued = start - timedelta(hours=2)
        run = ForecastRunRow(uuid.uuid4().hex, "node_load", node, "holt-winters", issued, start, 900, 96,
                             2688, 0, "")
        load = [60.0 + (40.0 if 72 <= i < 80 else 0.0) for i in range(96)]  # 18:00-20:00 at 100 kW
        store.insert_forecast(run, [
            ForecastPoint(run.run_id, "node_load", node, "holt-winters", issued,
                          start + timedelta(minutes=15 * i), i + 1, v, v - 2.0, v, v + 2.0)
            for i, v in enumerate(load)])
        live.hset(keys.node(node), mapping={
            "est_available_discharge_kw": 20, "est_available_charge_kw": 20, "est_energy_available_kwh": 20,
            "est_charge_headroom_kwh": 20, "coverage": 0.7})
        planned = plan_node(store, live, node, day)
        assert isinstance(planned.plan, Plan)
        assert planned.plan.threshold_kw < 100.0
        assert any("coverage 70%" in note for note in planned.plan.notes)
        [row] = store.peak_events(node, start, start + timedelta(days=1))
        assert row.status == "planned" and row.plan_id == planned.plan_id
        assert row.threshold_kw == planned.plan.threshold_kw and row.forecast_peak_kw == 100.0
        assert "coverage 70%" in row.note
    finally:
        live.delete(keys.node(node))
        live.close()
        client.close()


def test_a_day_is_completed_from_node_minute_with_the_counterfactual_peak(stack_settings: Settings) -> None:
    from vpp.peak_service import record_day

    node = f"feeder-{uuid.uuid4().hex[:8]}"
    start = datetime(2026, 3, 3, tzinfo=UTC)
    client = history.connect(stack_settings)
    try:
        history.apply_ddl(client)
        store = history.HistoryStore(client, stack_settings.clickhouse_database)
        with pytest.raises(ValueError, match="no complete measurements"):
            record_day(store, node, start.date())
        planned = PeakEvent(node, start, "p9", "planned", 100.0, 90.0, float("nan"), float("nan"), 0.0, 0.0,
                            False, "", start - timedelta(hours=6))
        store.insert_peak_events([planned])
        # Every minute: 60 kW of grid import; 18:00-19:00 the load is 100 kW and the fleet gives 10,
        # 20:00-21:00 it recharges 5 kW on a 60 kW load.
        rows = []
        for m in range(1440):
            hour = m // 60
            battery = 10.0 if hour == 18 else -5.0 if hour == 20 else 0.0
            load = 100.0 if hour == 18 else 60.0
            rows.append([node, "electrical", start + timedelta(minutes=m), load - battery, battery, 1])
        client.insert("vpp.node_minute", rows,
                      column_names=["node_id", "hierarchy", "minute", "grid_kw", "battery_kw", "version"])
        event = record_day(store, node, start.date(), now=start + timedelta(days=1))
        assert event.status == "completed" and event.plan_id == "p9" and event.threshold_kw == 90.0
        assert event.actual_peak_kw == 90.0 and event.counterfactual_peak_kw == 100.0
        assert event.energy_delivered_kwh == pytest.approx(10.0)
        assert event.energy_recharged_kwh == pytest.approx(5.0)
        assert not event.rebound
        assert store.peak_events(node, start, start + timedelta(days=1)) == [event]
    finally:
        client.close()
