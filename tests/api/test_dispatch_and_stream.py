"""Dispatch through the API with the real control dataflow, and the live event stream."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from core.topics import DISPATCH_REQUESTS
from schemas import packaged_codec
from tests.api.conftest import Api
from tests.telemetry.flowrun import read_topic

pytestmark = pytest.mark.integration


def _poll(client: httpx.Client, path: str, until: Any, timeout_s: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        response = client.get(path)
        if response.status_code == 200:
            body = response.json()
            if until(body):
                return body
        time.sleep(0.5)
    raise AssertionError(f"{path} never got there; last answer {body}")


def test_dispatch_runs_reports_error_over_time_and_cancels(api: Api) -> None:
    end = datetime.now(UTC) + timedelta(minutes=10)
    with api.client("dispatch") as client:
        accepted = client.post("/v1/dispatch", json={"node_id": "feeder-0-0", "target_kw": 40,
                                                     "end": end.isoformat(), "strategy": "waterfill"})
        assert accepted.status_code == 202, accepted.text
        dispatch_id = accepted.json()["dispatch_id"]
        assert accepted.headers["location"] == f"/v1/dispatch/{dispatch_id}"
        messages = read_topic(api.settings, DISPATCH_REQUESTS, 1.0)
        requests = [packaged_codec().decode(m.value()) for m in messages]
        (sent,) = [r for r in requests if r["dispatch_id"] == dispatch_id]
        assert (sent["action"], sent["node_id"], sent["target_kw"], sent["requested_by"]) == (
            "CREATE", "feeder-0-0", 40.0, "trader")
        status = _poll(client, f"/v1/dispatch/{dispatch_id}",
                       lambda b: b["state"] == "ACTIVE" and b["event_time"] and len(b["history"]) >= 2)
        assert status["target_kw"] == 40 and status["node_id"] == "feeder-0-0", status
        assert status["sites_total"] > 0 and status["measured_kw"] is not None
        times = [p["event_time"] for p in status["history"]]
        assert times == sorted(times) and all(t.endswith("Z") for t in times), times  # UTC, not naive
        assert all(p["target_kw"] == 40 for p in status["history"])
        listed = client.get("/v1/dispatch", params={"limit": 1}).json()
        assert listed["count"] >= 1 and len(listed["data"]) == 1
        (summary,) = [d for d in client.get("/v1/dispatch").json()["data"] if d["dispatch_id"] == dispatch_id]
        assert summary["node_id"] == "feeder-0-0" and summary["state"] == "ACTIVE" and summary["end"], summary
        assert client.delete(f"/v1/dispatch/{dispatch_id}").status_code == 202
        _poll(client, f"/v1/dispatch/{dispatch_id}", lambda b: b["state"] == "CANCELLED")


@pytest.mark.parametrize(("body", "message"), [
    ({"node_id": "feeder-9-9", "target_kw": 5}, "unknown node"),
    ({"node_id": "feeder-0-0", "site_ids": ["site-0-000001"], "target_kw": 5}, "either a node or"),
    ({"node_id": "feeder-0-0", "target_kw": 5, "strategy": "greedy"}, "unknown strategy"),
    ({"node_id": "feeder-0-0", "target_kw": 5e9}, "a typo?"),
    ({"node_id": "feeder-0-0", "target_kw": 5, "end": "2020-01-01T00:00:00Z"}, "ends ("),
    ({"site_ids": ["site-9-999999"], "target_kw": 5}, "unknown site"),
])
def test_refused_dispatches_say_what_to_change(api: Api, body: dict[str, Any], message: str) -> None:
    request = {"end": (datetime.now(UTC) + timedelta(minutes=5)).isoformat(), **body}
    with api.client("dispatch") as client:
        response = client.post("/v1/dispatch", json=request)
    assert response.status_code == 422 and message in response.json()["detail"], response.text


def test_a_reused_dispatch_id_is_409_unless_it_replaces(api: Api) -> None:
    ident = f"d-reused-{time.time_ns()}"
    body = {"node_id": "feeder-0-0", "target_kw": 5, "dispatch_id": ident,
            "end": (datetime.now(UTC) + timedelta(minutes=10)).isoformat()}
    with api.client("dispatch") as client:
        assert client.post("/v1/dispatch", json=body).status_code == 202
        _poll(client, f"/v1/dispatch/{ident}", lambda b: b["state"] == "ACTIVE")
        again = client.post("/v1/dispatch", json={**body, "target_kw": 7})
        assert again.status_code == 409 and "already used" in again.json()["detail"], again.text
        replaced = client.post("/v1/dispatch", json={**body, "target_kw": 7, "replace": True})
        assert replaced.status_code == 202, replaced.text
        _poll(client, f"/v1/dispatch/{ident}", lambda b: b["target_kw"] == 7)
        assert client.delete(f"/v1/dispatch/{ident}").status_code == 202


def test_unknown_dispatches_are_404(api: Api) -> None:
    with api.client("dispatch") as client:
        assert client.get("/v1/dispatch/d-none").status_code == 404
        assert client.delete("/v1/dispatch/d-none").status_code == 404


def test_a_page_offset_beyond_what_the_store_takes_is_a_422_not_a_500(api: Api) -> None:
    """Found by the schemathesis run: an offset past Redis's 64-bit range made the list a 500."""
    with api.client("dispatch") as client:
        response = client.get("/v1/dispatch", params={"offset": 2**63})
        assert response.status_code == 422
        assert response.headers["content-type"].startswith("application/problem+json")
        assert client.get("/v1/dispatch", params={"offset": 100_000_000}).json()["data"] == []


def _events(api: Api, who: str, params: dict[str, Any], wanted: int, timeout_s: float = 20) -> list[Any]:
    events: list[Any] = []
    deadline = time.monotonic() + timeout_s
    with api.client(who) as client, client.stream("GET", "/v1/stream", params=params) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        kind = None
        for line in response.iter_lines():
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append((kind, json.loads(line.removeprefix("data: "))))
            elif line == ": connected" and wanted == 0:
                return events
            if len(events) >= wanted > 0 or time.monotonic() > deadline:
                return events
    return events


def test_stream_sends_live_node_updates(api: Api) -> None:
    events = _events(api, "read", {"nodes": ["state-0", "region-0"]}, wanted=4)
    assert len(events) == 4
    assert {kind for kind, _ in events} == {"node"}
    assert {data["node_id"] for _, data in events} <= {"state-0", "region-0"}
    assert all(data["expected_sites"] > 0 and isinstance(data["event_time"], int) for _, data in events)


def test_a_customer_stream_opens_for_its_own_sites(api: Api) -> None:
    assert _events(api, "customer_a", {}, wanted=0) == []
