"""Tokens and scopes: who may read and do what."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from pydantic import SecretStr

from api.auth import AuthError, Scope, issue_api_token, verify_api_token
from core import history
from tests.api.conftest import Api

pytestmark = pytest.mark.integration

FLEET_READS = ["/v1/nodes", "/v1/nodes/state-0", "/v1/nodes/region-0/children",
               "/v1/nodes/feeder-0-0/parents", "/v1/nodes/region-0/sites", "/v1/nodes/region-0/history",
               "/v1/dispatch"]


def test_requests_without_a_valid_token_are_401(api: Api) -> None:
    with api.client(None) as client:
        missing = client.get("/v1/nodes/state-0")
        assert missing.status_code == 401 and "bearer token" in missing.json()["detail"]
        assert missing.headers["www-authenticate"] == "Bearer"
        garbage = client.get("/v1/nodes/state-0", headers={"Authorization": "Bearer not-a-jwt"})
        assert garbage.status_code == 401
        expired = issue_api_token(api.settings, "old", {Scope.READ}, ttl=timedelta(seconds=1),
                                  now=datetime.now(UTC) - timedelta(hours=1)).token
        secret = SecretStr("another-secret-long-enough-for-hs256")
        other = api.settings.model_copy(update={"api_token_secret": secret})
        foreign = issue_api_token(other, "x", {Scope.ADMIN}).token
        for token in (expired, foreign):
            response = client.get("/v1/nodes/state-0", headers={"Authorization": f"Bearer {token}"})
            assert response.status_code == 401


def test_device_tokens_are_not_api_tokens(api: Api) -> None:
    with api.client("admin") as client:
        device = client.post("/v1/tokens/devices", json={"site_id": sorted(api.fleet.sites)[0]}).json()
    gateway_secret = SecretStr(api.settings.gateway_keys().current)
    settings = api.settings.model_copy(update={"api_token_secret": gateway_secret})
    with pytest.raises(AuthError):
        verify_api_token(settings, device["token"])


@pytest.mark.parametrize("path", FLEET_READS)
def test_a_customer_sees_nothing_of_the_fleet(api: Api, path: str) -> None:
    with api.client("customer_a") as client:
        response = client.get(path)
    assert response.status_code == 403, response.text


def test_a_customer_reads_only_its_own_site(api: Api) -> None:
    own, other = api.site_of("customer_a"), api.site_of("customer_b")
    with api.client("customer_a") as client:
        assert client.get(f"/v1/sites/{own}").status_code == 200
        assert client.get(f"/v1/sites/{own}/history").status_code == 200
        for path in (f"/v1/sites/{other}", f"/v1/sites/{other}/history", "/v1/sites/site-9-000009",
                     f"/v1/sites/{own}/ancestors"):
            assert client.get(path).status_code == 403, path
        assert client.get("/v1/stream", params={"nodes": "state-0"}).status_code == 403
        assert client.get("/v1/stream", params={"sites": other}).status_code == 403


def test_a_read_token_cannot_dispatch_change_assets_or_issue_tokens(api: Api) -> None:
    end = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
    site = sorted(api.fleet.sites)[0]
    writes = [
        ("POST", "/v1/dispatch", {"node_id": "feeder-0-0", "target_kw": 5, "end": end}),
        ("DELETE", "/v1/dispatch/d-1", None),
        ("POST", f"/v1/assets/sites/{site}/retire", {}),
        ("POST", "/v1/tokens/devices", {"site_id": site}),
        ("POST", "/v1/tokens/api", {"subject": "me", "scopes": ["admin"]}),
        ("DELETE", "/v1/tokens/devices/" + "0" * 32, None),
    ]
    for who in ("read", "customer_a"):
        with api.client(who) as client:
            for method, path, body in writes:
                response = client.request(method, path, json=body)
                assert response.status_code == 403, (who, method, path, response.text)
    with api.client("dispatch") as client:
        assert client.post(f"/v1/assets/sites/{site}/retire", json={}).status_code == 403
    with api.client("assets") as client:
        assert client.post("/v1/dispatch", json=writes[0][2]).status_code == 403


def test_admin_issues_api_tokens_and_customer_tokens_are_read_only(api: Api) -> None:
    site = api.site_of("customer_a")
    with api.client("admin") as client:
        issued = client.post("/v1/tokens/api",
                             json={"subject": "home-1", "scopes": ["read"], "sites": [site]})
        assert issued.status_code == 201 and issued.json()["sites"] == [site]
        refused = client.post("/v1/tokens/api",
                              json={"subject": "x", "scopes": ["dispatch"], "sites": [site]})
        assert refused.status_code == 422 and "only the read scope" in refused.json()["detail"]
        assert client.post("/v1/tokens/api", json={"subject": "x", "scopes": ["root"]}).status_code == 422
    customer = httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {issued.json()['token']}"})
    with customer:
        assert customer.get(f"/v1/sites/{site}").status_code == 200
        assert customer.get("/v1/nodes/state-0").status_code == 403


def test_device_token_issue_and_revoke(api: Api) -> None:
    site = sorted(api.fleet.sites)[2]
    with api.client("admin") as client:
        issued = client.post("/v1/tokens/devices",
                             json={"site_id": site, "ttl_hours": 1, "region": "region-0"})
        assert issued.status_code == 201
        jti = issued.json()["jti"]
        assert client.delete(f"/v1/tokens/devices/{jti}").json() == {"jti": jti, "already": False}
        assert client.delete(f"/v1/tokens/devices/{jti}").json() == {"jti": jti, "already": True}
        store = history.HistoryStore(history.connect(api.settings), api.settings.clickhouse_database)
        assert store.is_revoked(jti)  # durable: survives Redis losing gateway:revoked
        store.client.close()
        assert client.post("/v1/tokens/devices", json={"site_id": "site-9-000001"}).status_code == 404
        assert client.delete("/v1/tokens/devices/not-a-jti").status_code == 422
