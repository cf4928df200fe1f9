"""Asset changes through the API reach the registry, Redis navigation and past-time queries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.api.conftest import Api

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=0)
T = [NOW - timedelta(minutes=60 - 10 * i) for i in range(6)]  # effective times, oldest first


def _site(site_id: str, at: datetime) -> dict[str, Any]:
    return {"site_id": site_id, "customer_id": f"c-{site_id}", "lat": -33.9, "lon": 151.2,
            "capacity_kwh": 13.5, "max_charge_kw": 5, "max_discharge_kw": 5, "reserve_pct": 20,
            "solar_kwp": 6.6, "tariff": "tou",
            "region": "region-spare", "feeder_id": "feeder-spare-0", "postcode_id": "postcode-spare",
            "programs": ["program-0"], "at": at.isoformat()}


def _ids(page: dict[str, Any]) -> list[str]:
    return [item["id"] if isinstance(item, dict) else item for item in page["data"]]


def test_site_lifecycle_with_effective_times(api: Api) -> None:
    site = "site-spare-000001"
    with api.client("assets") as client:
        created = client.post("/v1/assets/sites", json=_site(site, T[0]))
        assert created.status_code == 201, created.text
        assert client.post("/v1/assets/sites", json=_site(site, T[0])).status_code == 422  # exists
        assert _ids(client.get("/v1/nodes/feeder-spare-0/children").json()) == [site]
        moved = client.post(f"/v1/assets/sites/{site}/move", json={
            "hierarchy": "electrical", "parent_id": "feeder-spare-1", "at": T[1].isoformat()})
        assert moved.status_code == 200, moved.text
        enrolled = client.post(f"/v1/assets/sites/{site}/enrollments",
                               json={"program_id": "program-1", "at": T[2].isoformat()})
        assert enrolled.status_code == 201, enrolled.text
        left = client.delete(f"/v1/assets/sites/{site}/enrollments/program-0",
                             params={"at": T[3].isoformat()})
        assert left.status_code == 200, left.text
        reparented = client.post("/v1/assets/nodes/feeder-spare-1/reparent",
                                 json={"parent_id": "substation-spare-1", "at": T[4].isoformat()})
        assert reparented.status_code == 200, reparented.text
        # now: Redis navigation; before: the registry at each effective time
        assert _ids(client.get("/v1/nodes/substation-spare-1/sites").json()) == [site]
        assert _ids(client.get("/v1/nodes/feeder-spare-1/parents").json()) == ["substation-spare-1"]
        at = {i: {"at": (t + timedelta(seconds=1)).isoformat()} for i, t in enumerate(T)}
        assert _ids(client.get("/v1/nodes/feeder-spare-0/sites", params=at[0]).json()) == [site]
        assert _ids(client.get("/v1/nodes/feeder-spare-1/sites", params=at[1]).json()) == [site]
        assert _ids(client.get("/v1/nodes/substation-spare-0/sites", params=at[3]).json()) == [site]
        assert _ids(client.get("/v1/nodes/substation-spare-1/sites", params=at[3]).json()) == []
        assert client.get(f"/v1/sites/{site}/ancestors", params=at[2]).json()["program"] == ["program-0",
                                                                                               "program-1"]
        assert client.get(f"/v1/sites/{site}/ancestors").json()["program"] == ["program-1"]
        retired = client.post(f"/v1/assets/sites/{site}/retire", json={"at": T[5].isoformat()})
        assert retired.status_code == 200, retired.text
        assert _ids(client.get("/v1/nodes/region-spare/sites").json()) == []
        assert client.get(f"/v1/sites/{site}").json()["status"] == "UNKNOWN"


def test_refused_changes_say_why(api: Api) -> None:
    site = "site-spare-000002"
    with api.client("assets") as client:
        assert client.post("/v1/assets/sites", json=_site(site, T[0])).status_code == 201
        cases = [
            (f"/v1/assets/sites/{site}/move", {"hierarchy": "electrical", "parent_id": "postcode-spare"},
             "must be a feeder"),
            (f"/v1/assets/sites/{site}/move",
             {"hierarchy": "electrical", "parent_id": "feeder-spare-1",
              "at": (T[0] - timedelta(hours=1)).isoformat()},
             "changes must be effective after"),
            ("/v1/assets/nodes/feeder-spare-0/reparent", {"parent_id": "region-spare"},
             "must be a substation"),
            ("/v1/assets/nodes/region-spare/reparent", {"parent_id": "region-0"}, "root"),
            (f"/v1/assets/sites/{site}/enrollments", {"program_id": "program-0"}, "already enrolled"),
        ]
        for path, body, message in cases:
            response = client.post(path, json=body)
            assert response.status_code == 422 and message in response.json()["detail"], (path, response.text)
        assert client.post("/v1/assets/sites/site-spare-999999/retire", json={}).status_code == 404
        unknown = client.post("/v1/assets/nodes/feeder-nope/reparent", json={"parent_id": "x"})
        assert unknown.status_code == 404
        bad = client.post("/v1/assets/sites", json={**_site("site-spare-000003", T[0]), "reserve_pct": 120})
        assert bad.status_code == 422 and "reserve_pct" in bad.text
        too_late = client.post(f"/v1/assets/sites/{site}/retire", json={"at": "9999-01-01T00:00:00Z"})
        assert too_late.status_code == 422 and "outside 1970-2200" in too_late.text
        query = client.delete(f"/v1/assets/sites/{site}/enrollments/program-0",
                              params={"at": "1900-01-01T00:00:00"})
        assert query.status_code == 422 and "outside 1970-2200" in query.text
