"""GET /v1/nodes/{id}/plan, /v1/sites/{id}/plan and the storm-watch endpoints on the live API.

The node plan hash is written as the plans dataflow writes it (the desk's own
``NodeAnswer.fields``), a site's plans as ``site_plan`` rows; the flow itself is
tested in tests/integration/test_plans_flow.py. A storm watch
must reach the node's member sites as a StormWatch record on ``storm.watch``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
import redis

from core import history, keys
from core.rows import SitePlanRow
from core.topics import STORM_WATCH
from schemas import packaged_codec
from schemas.times import epoch_ms
from siteplan.aggregate import NodePlan
from siteplan.desk import NodeAnswer
from tests.api.conftest import Api
from tests.telemetry import flowrun

pytestmark = pytest.mark.integration


def test_a_node_plan_and_a_site_plan_are_read_where_the_flow_writes_them(api: Api) -> None:
    node = "feeder-spare-1"
    site = sorted(api.fleet.sites)[2]
    with api.client("read") as client:
        missing = client.get(f"/v1/nodes/{node}/plan")
        assert missing.status_code == 404
        assert missing.headers["content-type"].startswith("application/problem+json")
        assert client.get(f"/v1/sites/{site}/plan").status_code == 404

    start = datetime(2030, 1, 1, tzinfo=UTC)
    plan = NodePlan(node, epoch_ms(start), 15, np.array([1.5, -2.0]), np.array([2.5, -1.0]), 4,
                    np.array([3, 2]), np.array([1, 1]), 1)
    computed = start - timedelta(minutes=1)
    live = redis.Redis.from_url(api.settings.redis, decode_responses=True)
    fields: Any = NodeAnswer(node, "electrical", plan, epoch_ms(computed)).fields()
    live.hset(keys.node_plan(node), mapping=fields)
    store = history.HistoryStore(history.connect(api.settings), api.settings.clickhouse_database)
    older = SitePlanRow(site, "p-0", computed - timedelta(minutes=15), start, 15, [9.0, 9.0], None, computed)
    newer = SitePlanRow(site, "p-1", computed, start, 15, [0.5, -0.25], None, computed)
    store.insert_site_plans([older, newer])
    try:
        with api.client("read") as client:
            got = client.get(f"/v1/nodes/{node}/plan").json()
            mine = client.get(f"/v1/sites/{site}/plan").json()
        with api.client("customer_a") as client:
            assert client.get(f"/v1/sites/{site}/plan").status_code == 403  # not the customer's site
    finally:
        live.delete(keys.node_plan(node))
        live.close()
        store.client.command(f"TRUNCATE TABLE {api.settings.clickhouse_database}.site_plan")
        store.client.close()
    assert got["planned_kw"] == [1.5, -2.0] and got["estimate_kw"] == [2.5, -1.0]
    assert got["planned_sites"] == [3, 2] and got["carried_sites"] == [1, 1]
    assert got["coverage"] == [0.75, 0.5] and got["expected_sites"] == 4 and got["stale_sites"] == 1
    assert datetime.fromisoformat(got["start"]) == start and got["hierarchy"] == "electrical"
    assert mine["plan_id"] == "p-1" and mine["power_kw"] == [0.5, -0.25]
    assert mine["forecast_issued_at"] is None


def test_a_storm_watch_reaches_the_nodes_sites_is_listed_and_cleared(api: Api) -> None:
    node = next(n for n in sorted(api.fleet.registry.nodes) if n.startswith("feeder-")
                and not n.startswith("feeder-spare"))
    with redis.Redis.from_url(api.settings.redis, decode_responses=True) as live:
        members = sorted(str(s) for s in live.smembers(keys.node_sites(node)))
    now = datetime.now(UTC)
    body = {"node_id": node, "starts": (now + timedelta(hours=6)).isoformat(),
            "until": (now + timedelta(hours=12)).isoformat()}
    with api.client("read") as client:
        assert client.post("/v1/storm-watch", json=body).status_code == 403  # needs the dispatch scope
    with api.client("dispatch") as client:
        assert client.post("/v1/storm-watch", json={**body, "node_id": "feeder-9-99"}).status_code == 404
        backwards = client.post("/v1/storm-watch", json={**body, "until": now.isoformat()})
        assert backwards.status_code == 422 and "before it begins" in backwards.json()["detail"]
        raised = client.post("/v1/storm-watch", json=body)
        assert raised.status_code == 201, raised.text
        assert raised.json()["sites"] == len(members) > 0
        listed = client.get("/v1/storm-watch").json()
        assert [w["node_id"] for w in listed["data"]] == [node]
        cleared = client.delete(f"/v1/storm-watch/{node}")
        assert cleared.status_code == 200
        assert client.get("/v1/storm-watch").json()["count"] == 0
        assert client.delete(f"/v1/storm-watch/{node}").status_code == 404

    codec = packaged_codec()
    messages = flowrun.read_topic(api.settings, STORM_WATCH)
    records = [codec.decode(m.value(), "StormWatch") for m in messages if m.key() == node.encode()]
    assert [r["action"] for r in records][-2:] == ["RAISE", "CLEAR"]
    raised_record = records[-2]
    assert sorted(raised_record["site_ids"]) == members
    starts = datetime.fromisoformat(body["starts"])
    assert raised_record["starts"] == starts.replace(microsecond=starts.microsecond // 1000 * 1000)


def test_vpp_storm_raises_lists_and_clears_a_watch(api: Api) -> None:
    import json

    from typer.testing import CliRunner

    from vpp.cli import app
    from vpp.dataflows import settings_env

    env = settings_env(api.settings)
    runner = CliRunner()

    def vpp(*args: str) -> Any:
        return runner.invoke(app, ["storm", *args], env=env)

    node = "substation-0-0"
    raised = vpp("raise", node, "--hours", "3")
    assert raised.exit_code == 0, raised.output
    listed = vpp("list", "--json")
    assert [w["node_id"] for w in json.loads(listed.output)] == [node]
    assert vpp("clear", node).exit_code == 0
    assert vpp("clear", node).exit_code == 1
    assert vpp("raise", "feeder-9-99").exit_code == 2


def test_plan_history_of_a_node_and_of_a_site_per_interval(api: Api) -> None:
    from core.rows import NodePlanRow

    node, site = "feeder-spare-1", sorted(api.fleet.sites)[3]
    start = datetime(2030, 2, 1, tzinfo=UTC)
    q = timedelta(minutes=15)
    store = history.HistoryStore(history.connect(api.settings), api.settings.clickhouse_database)
    store.insert_node_plans([NodePlanRow(node, "electrical", start + i * q, 15, 10.0 * i, 12.0 * i, 4, 3, 1,
                                         0, 0.75, start - q) for i in range(4)])
    store.insert_site_plans([
        SitePlanRow(site, "p-a", start - q, start, 15, [1.0, 1.0, 1.0], None, start - q),
        SitePlanRow(site, "p-b", start + q, start + q, 15, [-2.0, -2.0], None, start + q)])  # revises from +q
    window = {"start": start.isoformat(), "end": (start + 3 * q).isoformat()}
    try:
        with api.client("read") as client:
            nodes = client.get(f"/v1/nodes/{node}/plan/history", params=window).json()
            paged = client.get(f"/v1/nodes/{node}/plan/history",
                               params={**window, "limit": 1, "offset": 2}).json()
            sites = client.get(f"/v1/sites/{site}/plan/history", params=window).json()
            backwards = client.get(f"/v1/nodes/{node}/plan/history",
                                   params={"start": window["end"], "end": window["start"]})
        with api.client("customer_a") as client:
            assert client.get(f"/v1/sites/{site}/plan/history", params=window).status_code == 403
    finally:
        for table in ("site_plan", "node_plan"):
            store.client.command(f"TRUNCATE TABLE {api.settings.clickhouse_database}.{table}")
        store.client.close()
    assert nodes["count"] == 3 and [p["planned_kw"] for p in nodes["data"]] == [0.0, 10.0, 20.0]
    assert nodes["data"][1]["estimate_kw"] == 12.0 and nodes["data"][1]["coverage"] == 0.75
    assert paged["count"] == 3 and [p["planned_kw"] for p in paged["data"]] == [20.0]
    assert [(p["power_kw"], p["plan_id"]) for p in sites["data"]] == [(1.0, "p-a"), (-2.0, "p-b"),
                                                                       (-2.0, "p-b")]
    assert backwards.status_code == 422
    assert backwards.headers["content-type"].startswith("application/problem+json")
