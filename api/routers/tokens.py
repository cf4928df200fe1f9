"""Tokens (``admin`` scope): device tokens for the edge gateway, and API tokens.

Device tokens are :mod:`core.device_tokens`' (signed per site, revoked by
jti through :mod:`core.revocations`: durably, then in the set every gateway
checks); API tokens are :mod:`api.auth`'s.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, status

from api.auth import issue_api_token
from api.deps import Admin, ResourcesDep, SettingsDep
from api.models import ApiToken, ApiTokenCreate, DeviceToken, DeviceTokenCreate, Revoked
from api.routers.telemetry import known_site
from core.device_tokens import issue_token
from core.revocations import revoke_token

router = APIRouter(prefix="/v1/tokens", tags=["tokens"])

Jti = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$", description="The jti of a device token.")]


@router.post("/devices", status_code=status.HTTP_201_CREATED, summary="Issue a device token")
def issue_device_token(body: DeviceTokenCreate, _: Admin, settings: SettingsDep,
                       resources: ResourcesDep) -> DeviceToken:
    """A token the site's device presents to the gateway; keep the jti to revoke it."""
    known_site(resources, body.site_id)
    ttl = timedelta(hours=body.ttl_hours) if body.ttl_hours is not None else None
    issued = issue_token(settings, body.site_id, region=body.region, ttl=ttl)
    return DeviceToken(token=issued.token, site_id=body.site_id, jti=issued.claims.jti,
                       expires_at=issued.claims.expires_at)


@router.delete("/devices/{jti}", summary="Revoke a device token")
def revoke_device_token(jti: Jti, admin: Admin, settings: SettingsDep) -> Revoked:
    """Recorded durably, then gateways refuse it and close connections using it at their next heartbeat."""
    fresh = revoke_token(settings, jti, revoked_by=admin.subject)
    return Revoked(jti=jti, already=not fresh)


@router.post("/api", status_code=status.HTTP_201_CREATED, summary="Issue an API token")
def issue_api(body: ApiTokenCreate, _: Admin, settings: SettingsDep) -> ApiToken:
    """Fleet scopes for programs and operators, or a customer's sites (read only)."""
    ttl = timedelta(hours=body.ttl_hours) if body.ttl_hours is not None else None
    try:
        issued = issue_api_token(settings, body.subject, set(body.scopes),
                                 sites=set(body.sites) if body.sites is not None else None, ttl=ttl)
    except ValueError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
    principal = issued.principal
    return ApiToken(token=issued.token, subject=principal.subject, scopes=sorted(principal.scopes),
                    sites=sorted(principal.sites) if principal.sites is not None else None,
                    expires_at=issued.expires_at)
