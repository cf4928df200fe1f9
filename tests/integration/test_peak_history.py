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
