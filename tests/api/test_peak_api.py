"""POST/GET /v1/peak/plans: a node's day planned from its stored forecast and live fleet, then listed."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
import redis

from core import history, keys
from core.rows import ForecastPoint, ForecastRunRow
from tests.api.conftest import Api

pytestmark = pytest.mark.integration

NODE = "substation-spare-1"  # no sites report under it, so its live aggregate is the one set here
DAY = datetime(2030, 1, 2, tzinfo=UTC)


def test_a_day_is_planned_recorded_and_listed(api: Api) -> None:
    body = {"node_id": NODE, "day": DAY.date().isoformat()}
    with api.client("read") as client:
        assert client.post("/v1/peak/plans", json=body).status_code == 403  # needs the dispatch scope
    with api.client("dispatch") as client:
        assert client.post("/v1/peak/plans", json={**body, "node_id": "feeder-9-99"}).status_code == 404
        none = client.post("/v1/peak/plans", json=body).json()
    assert none["status"] == "no_event" and "no load forecast" in none["reason"]

    store = history.HistoryStore(history.connect(api.settings), api.settings.clickhouse_database)
    issued = datetime.now(UTC)
    run = ForecastRunRow(uuid.uuid4().hex, "node_load", NODE, "holt-winters", issued, DAY, 900, 96, 2688, 0,
                         "")
    load = [60.0 + (40.0 if 72 <= i < 80 else 0.0) for i in range(96)]
    store.insert_forecast(run, [ForecastPoint(run.run_id, "node_load", NODE, "holt-winters", issued,
                                              DAY + timedelta(minutes=15 * i), i + 1, v, v - 2, v, v + 2)
                                for i, v in enumerate(load)])
    store.client.close()
    live = redis.Redis.from_url(api.settings.redis, decode_responses=True)
    before: dict[str, str] = {str(k): str(v) for k, v in live.hgetall(keys.node(NODE)).items()}
    live.hset(keys.node(NODE), mapping={"est_available_discharge_kw": 20, "est_available_charge_kw": 20,
                                        "est_energy_available_kwh": 20, "est_charge_headroom_kwh": 20,
                                        "coverage": 1.0})
    try:
        with api.client("dispatch") as client:
            planned = client.post("/v1/peak/plans", json=body)
        assert planned.status_code == 201
        plan = planned.json()
        assert plan["status"] == "planned" and plan["forecast_peak_kw"] == 100.0
        assert 80.0 <= plan["threshold_kw"] < 100.0 and len(plan["intervals"]) == 96
        assert max(i["net_kw"] for i in plan["intervals"]) <= plan["threshold_kw"] + 1e-3
        with api.client("read") as client:
            window = {"start": DAY.isoformat(), "end": (DAY + timedelta(days=1)).isoformat()}
            listed = client.get("/v1/peak/plans", params={"node_id": NODE, **window}).json()
        assert listed["count"] == 1
        [row] = listed["data"]
        assert row["plan_id"] == plan["plan_id"] and row["status"] == "planned"
        assert row["threshold_kw"] == plan["threshold_kw"] and row["actual_peak_kw"] is None
    finally:
        live.delete(keys.node(NODE))
        for field, value in before.items():
            live.hset(keys.node(NODE), field, value)
        live.close()
