"""The read endpoints the operator's console needs: a node's site twins and a site's received commands."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.api.conftest import SITES, Api

pytestmark = pytest.mark.integration


def _until(client: httpx.Client, path: str, params: dict[str, Any], found: Any, timeout_s: float = 60) -> Any:
    deadline = time.monotonic() + timeout_s
    body: Any = None
    while time.monotonic() < deadline:
        response = client.get(path, params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        if (hit := found(body)) is not None:
            return hit
        time.sleep(0.5)
    raise AssertionError(f"{path} never had it; last answer {body}")


def test_a_node_lists_its_sites_with_status_last_seen_and_power(api: Api) -> None:
    with api.client("read") as client:
        ids = client.get("/v1/nodes/feeder-0-0/sites", params={"limit": 50}).json()["data"]
        page = client.get("/v1/nodes/feeder-0-0/sites/twins", params={"limit": 50}).json()
        assert page["count"] == SITES and [s["site_id"] for s in page["data"]] == ids
        reporting = [s for s in page["data"] if s["status"] == "ONLINE"]
        assert reporting, page["data"][:3]
        assert all(s["last_seen"] and s["battery_kw"] is not None and s["soc_pct"] is not None
                   for s in reporting)
        rest = client.get("/v1/nodes/feeder-0-0/sites/twins", params={"limit": 50, "offset": 100}).json()
        assert len(rest["data"]) == SITES - 100 and rest["count"] == SITES
        # A spare feeder holds only sites other tests may have registered, none of which reports.
        spare = client.get("/v1/nodes/feeder-spare-0/sites").json()["data"]
        quiet = client.get("/v1/nodes/feeder-spare-0/sites/twins").json()
        assert [s["site_id"] for s in quiet["data"]] == spare and quiet["count"] == len(spare)
        assert all(s["status"] == "UNKNOWN" and s["last_seen"] is None for s in quiet["data"])
        assert client.get("/v1/nodes/feeder-9-9/sites/twins").status_code == 404
    with api.client("customer_a") as client:
        assert client.get("/v1/nodes/feeder-0-0/sites/twins").status_code == 403


def test_a_site_shows_the_commands_it_received(api: Api) -> None:
    end = datetime.now(UTC) + timedelta(minutes=3)
    with api.client("dispatch") as client:
        accepted = client.post("/v1/dispatch", json={"node_id": "feeder-0-0", "target_kw": -20,
                                                     "end": end.isoformat()})
        assert accepted.status_code == 202, accepted.text
        dispatch_id = accepted.json()["dispatch_id"]
        try:
            ours = dispatch_id + "/"
            site = _until(client, "/v1/nodes/feeder-0-0/sites/twins", {"limit": 1000}, lambda page: next(
                (s["site_id"] for s in page["data"] if (s["active_command_id"] or "").startswith(ours)),
                None))
            commands = _until(client, f"/v1/sites/{site}/commands", {}, lambda page: [
                c for c in page["data"] if c["dispatch_id"] == dispatch_id] or None)
            known = {"SENT", "ACCEPTED", "REJECTED", "EXPIRED", "UNANSWERED"}
            assert {c["status"] for c in commands} <= known
            first = commands[-1]
            assert first["setpoint_kw"] < 0 and first["valid_from"] < first["valid_until"], first
            assert first["event_time"].endswith("Z") and first["attempt"] >= 1, first
            times = [c["event_time"] for c in commands]
            assert times == sorted(times, reverse=True), "newest first"
            listed = client.get("/v1/dispatch").json()["data"]
            (summary,) = [d for d in listed if d["dispatch_id"] == dispatch_id]
            assert summary["sites_total"] and summary["sites_total"] > 0, summary
            past = client.get(f"/v1/sites/{site}/commands",
                              params={"end": (datetime.now(UTC) - timedelta(hours=1)).isoformat()}).json()
            assert all(c["dispatch_id"] != dispatch_id for c in past["data"]), "the range is honoured"
            assert client.get("/v1/sites/site-9-999999/commands").status_code == 404
        finally:
            client.delete(f"/v1/dispatch/{dispatch_id}")
    with api.client("customer_a") as client:
        own = client.get(f"/v1/sites/{api.site_of('customer_a')}/commands")
        assert own.status_code == 200, own.text
        assert client.get(f"/v1/sites/{api.site_of('customer_b')}/commands").status_code in (403, 404)
