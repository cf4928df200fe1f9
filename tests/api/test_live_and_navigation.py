"""Live aggregates, site twins and navigation (now and at a past time) over the live fleet."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import redis

from api.app import create_app
from tests.api.conftest import LOADED_AT, SITES, Api

pytestmark = pytest.mark.integration


def test_node_live_aggregate_states_coverage_and_estimate(api: Api) -> None:
    with api.client("read") as client:
        body = client.get("/v1/nodes/state-0").json()
        answered = datetime.now(UTC)
    assert body["kind"] == "state" and body["hierarchy"] == "geographic"
    live = body["live"]
    behind = (answered - datetime.fromisoformat(live["event_time"])).total_seconds()
    assert 0 <= live["pipeline_lag_s"] <= behind, "the pipeline's lag: wall clock minus event time"
    assert live["expected_sites"] == SITES
    assert live["reporting_sites"] + live["delayed_sites"] + live["offline_sites"] == SITES
    assert 0 <= live["coverage"] <= 1
    assert 0 < live["energy_available_kwh"] <= live["est_energy_available_kwh"]
    assert "_va" not in body and "seq" not in live
    with redis.Redis.from_url(api.settings.redis, decode_responses=True) as rds:
        stored = rds.hgetall("node:state-0")
    assert int(stored["expected_sites"]) == live["expected_sites"]


def test_nodes_list_and_walk_down_and_up(api: Api) -> None:
    with api.client("read") as client:
        roots = {n["id"]: n["kind"] for n in client.get("/v1/nodes", params={"roots": True}).json()["data"]}
        assert roots == {"region-0": "region", "state-0": "state", "program-0": "program",
                         "program-1": "program", "program-2": "program", "region-spare": "region",
                         "state-spare": "state"}
        feeders = client.get("/v1/nodes", params={"kind": "feeder"}).json()
        assert feeders["count"] == len([n for n in api.fleet.registry.nodes.values() if n.kind == "feeder"])
        page = client.get("/v1/nodes", params={"kind": "feeder", "limit": 2, "offset": 1}).json()
        assert page["count"] == feeders["count"] and page["data"] == feeders["data"][1:3], "paginated"
        substations = client.get("/v1/nodes/region-0/children").json()["data"]
        assert substations and {c["kind"] for c in substations} == {"substation"}
        feeder = client.get(f"/v1/nodes/{substations[0]['id']}/children").json()["data"][0]
        sites = client.get(f"/v1/nodes/{feeder['id']}/children", params={"limit": 5}).json()
        assert {c["kind"] for c in sites["data"]} == {"site"} and len(sites["data"]) == min(5, sites["count"])
        parents = client.get(f"/v1/nodes/{feeder['id']}/parents").json()["data"]
        assert parents == [{"id": substations[0]["id"], "kind": "substation"}]
        members = client.get("/v1/nodes/region-0/sites", params={"limit": 10_000}).json()
        assert members["count"] == SITES and members["data"] == sorted(api.fleet.sites)


def test_navigation_at_a_past_time_uses_the_registry(api: Api) -> None:
    before = (LOADED_AT - timedelta(days=1)).isoformat()
    with api.client("read") as client:
        assert client.get("/v1/nodes/region-0/sites", params={"at": before}).json()["count"] == 0
        at_load = client.get("/v1/nodes/region-0/sites", params={"at": LOADED_AT.isoformat()}).json()
        assert at_load["count"] == SITES
        assert client.get("/v1/nodes/region-0/children", params={"at": before}).json()["count"] == 0
        site = sorted(api.fleet.sites)[5]
        chains = client.get(f"/v1/sites/{site}/ancestors").json()
        assert chains["electrical"][-1] == "region-0" and chains["geographic"][-1] == "state-0"
        assert client.get(f"/v1/sites/{site}/ancestors", params={"at": before}).json()["electrical"] == []


def test_site_twin_hides_internal_fields(api: Api) -> None:
    site = sorted(api.fleet.sites)[3]
    with api.client("read") as client:
        twin = client.get(f"/v1/sites/{site}").json()
    assert twin["site_id"] == site and twin["status"] in ("ONLINE", "DELAYED", "OFFLINE")
    assert twin["capacity_kwh"] == pytest.approx(api.fleet.sites[site].capacity_kwh)
    assert 0 <= twin["soc_pct"] <= 100 and twin["last_seen"] is not None
    assert not any(name.startswith("_") for name in twin)


@pytest.mark.parametrize("path", ["/v1/nodes/feeder-9-99", "/v1/nodes/feeder-9-99/children",
                                  "/v1/nodes/feeder-9-99/sites", "/v1/nodes/feeder-9-99/history",
                                  "/v1/sites/site-9-000001", "/v1/sites/site-9-000001/history",
                                  "/v1/sites/site-9-000001/ancestors"])
def test_unknown_ids_are_404_with_a_message(api: Api, path: str) -> None:
    with api.client("admin") as client:
        response = client.get(path)
    assert response.status_code == 404, response.text
    assert "unknown" in response.json()["detail"]


def test_a_read_waiting_for_the_registry_does_not_stall_the_live_reads(api: Api) -> None:
    """An unknown site (no twin) needs the registry; while its lock is held, node reads still answer."""
    app = create_app(api.settings)
    fleet = app.state.resources.fleet
    held, release = threading.Event(), threading.Event()

    def hold_registry() -> None:
        with fleet.use():
            held.set()
            release.wait(timeout=120)  # bounded: a stalled event loop cannot release it

    holder = threading.Thread(target=hold_registry, daemon=True)
    holder.start()
    assert held.wait(timeout=60)

    async def scenario() -> tuple[bool, bool, int, int]:
        headers = {"Authorization": f"Bearer {api.tokens['read']}"}
        try:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api",
                                         headers=headers, timeout=150) as client:
                waiting = asyncio.create_task(client.get("/v1/sites/site-9-000001"))
                await asyncio.sleep(0.2)  # the unknown site's read is now waiting for the registry
                live = await client.get("/v1/nodes/state-0")
                # answered while the registry was held and the other read still waited for it
                answered_while_held, other_waiting = holder.is_alive(), not waiting.done()
                release.set()
                return answered_while_held, other_waiting, live.status_code, (await waiting).status_code
        finally:
            release.set()
            await app.state.resources.close()

    answered_while_held, other_waiting, live_status, unknown_status = asyncio.run(scenario())
    holder.join(timeout=10)
    assert live_status == 200 and unknown_status == 404
    assert answered_while_held and other_waiting, "the live read waited for the registry"


def test_malformed_input_is_422_not_500(api: Api) -> None:
    with api.client("admin") as client:
        assert client.get("/v1/nodes/bad%20id").status_code == 422
        assert client.get("/v1/nodes/region-0/sites", params={"at": "yesterday"}).status_code == 422
        assert client.get("/v1/nodes/region-0/sites", params={"limit": 0}).status_code == 422


def test_health_and_metrics(api: Api) -> None:
    with api.client(None) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        assert client.get("/readyz").json() == {"status": "ok"}
        assert client.get("/livez").json() == {"status": "alive"}
        metrics = client.get("/metrics").text
    assert 'vpp_api_requests_total{method="GET",route="/v1/nodes/{node_id}",status="200"}' in metrics
    assert "vpp_api_request_seconds_bucket" in metrics
    assert "vpp_api_streams" in metrics and "vpp_api_stream_dropped_total" in metrics


def test_an_aggregate_whose_pipeline_stopped_does_not_keep_claiming_its_coverage(api: Api) -> None:
    """Issue 18: a stopped telemetry flow left ``coverage: 1.0`` in the API for minutes. An aggregate
    further behind the wall clock than a site may be silent (VPP_OFFLINE_AFTER_S) vouches for no site:
    coverage 0 and ``stale``; the same aggregate when fresh keeps its stored coverage."""
    offline_after_s = api.settings.offline_after_s
    now_ms = time.time() * 1000
    with redis.Redis.from_url(api.settings.redis, decode_responses=True) as rds:
        stored = rds.hgetall("node:state-0")
        try:
            for name, behind_s in (("lag-test-fresh", 0.0), ("lag-test-stopped", offline_after_s + 30)):
                rds.hset(f"node:{name}", mapping={**stored, "node_id": name, "coverage": "1.0",
                                                  "event_time": str(int(now_ms - behind_s * 1000))})
            with api.client("read") as client:
                fresh = client.get("/v1/nodes/lag-test-fresh").json()["live"]
                stopped = client.get("/v1/nodes/lag-test-stopped").json()["live"]
        finally:
            rds.delete("node:lag-test-fresh", "node:lag-test-stopped")
    assert (fresh["coverage"], fresh["stale"]) == (1.0, False)
    assert (stopped["coverage"], stopped["stale"]) == (0.0, True)
    assert stopped["pipeline_lag_s"] > offline_after_s
    assert stopped["reporting_sites"] == int(stored["reporting_sites"]), "counts stay as of the event time"


def test_a_navigation_time_with_no_utc_time_is_refused(api: Api) -> None:
    """Found by the OpenAPI property: ``0001-01-01T00:04:00+04:00`` is in year 0 in UTC (was a 500)."""
    with api.client("read") as client:
        answer = client.get("/v1/nodes/state-0/children", params={"at": "0001-01-01T00:04:00+04:00"})
    assert answer.status_code == 422, answer.text
    assert "no UTC time" in answer.text
