"""The forecast tables and the error view (schemas/clickhouse/050_forecast.sql) on the history server."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from core import history
from core.config import Settings

pytestmark = pytest.mark.integration

T0 = datetime(2026, 4, 1, tzinfo=UTC)


def test_the_error_view_scores_points_once_the_actuals_arrive(stack_settings: Settings) -> None:
    client = history.connect(stack_settings)
    assert {"vpp.forecast_runs", "vpp.forecast_points"} <= set(history.apply_ddl(client))
    node, run = f"feeder-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    points = [  # two 15-minute targets, horizons 1 and 2, the band 10..14 kW
        [run, "node_load", node, "holt-winters", T0, T0 + timedelta(minutes=15 * h), h, 12.0, 10.0, 12.0,
         14.0]
        for h in (1, 2)
    ]
    client.insert("vpp.forecast_points", points, column_names=[
        "run_id", "series_kind", "series_id", "model", "issued_at", "target_time", "horizon_steps", "value",
        "q10", "q50", "q90"])
    view = f"SELECT horizon_steps, points, mae, coverage_80 FROM vpp.forecast_node_errors " \
           f"WHERE series_id = '{node}' ORDER BY horizon_steps"
    assert client.query(view).result_rows == []  # no actuals yet
    minutes = [  # the first target's 15 minutes average 13 kW (inside the band), the second's 20 kW
        [node, "electrical", T0 + timedelta(minutes=15 + m), 13.0 if m < 15 else 20.0, 1]
        for m in range(30)
    ]
    client.insert("vpp.node_minute", minutes,
                  column_names=["node_id", "hierarchy", "minute", "load_kw", "version"])
    rows = client.query(view).result_rows
    assert [(h, n) for h, n, *_ in rows] == [(1, 1), (2, 1)]
    assert rows[0][2] == pytest.approx(1.0) and rows[0][3] == 1.0
    assert rows[1][2] == pytest.approx(8.0) and rows[1][3] == 0.0
