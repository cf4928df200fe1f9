"""Typed dependencies, so a route's signature says what it needs and who may call it.

``FleetReader`` and the other principal aliases check the bearer token and
its scope before the route runs (as ``async`` functions: they do no I/O, and
a plain ``def`` dependency would cost a thread-pool hop per request on the
live-read hot path); a customer token passes only
``SiteReader``-guarded routes, and only for its own sites. The stream also
takes the token as ``?token=`` because browsers cannot set headers on an
EventSource.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, HTTPException, Query, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.auth import AuthError, Principal, Scope, verify_api_token
from api.resources import Resources
from core.config import Settings

_bearer = HTTPBearer(auto_error=False, description="An API token (`vpp token api`), as `Bearer <token>`.")


async def get_resources(request: Request) -> Resources:
    """The process's shared clients."""
    resources: Resources = request.app.state.resources
    return resources


async def get_settings(request: Request) -> Settings:
    """The settings the app was made with."""
    settings: Settings = request.app.state.resources.settings
    return settings


ResourcesDep = Annotated[Resources, Depends(get_resources)]
SettingsDep = Annotated[Settings, Depends(get_settings)]


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail, headers={"WWW-Authenticate": "Bearer"})


async def get_principal(settings: SettingsDep,
                  credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
                  token: Annotated[str | None, Query(description="The API token, for EventSource clients "
                                                                 "that cannot send headers.",
                                                     include_in_schema=False)] = None) -> Principal:
    """The caller, from ``Authorization: Bearer`` (or ``?token=``); 401 without a valid token."""
    raw = credentials.credentials if credentials is not None else token
    if not raw:
        raise _unauthorized("missing bearer token: send `Authorization: Bearer <token>` "
                            "(issue one with `vpp token api`)")
    try:
        return verify_api_token(settings, raw)
    except AuthError as exc:
        raise _unauthorized(str(exc)) from None


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]


def require(scope: Scope) -> Callable[[Principal], Awaitable[Principal]]:
    """A dependency admitting fleet tokens with ``scope``; customers get 403."""
    async def check(principal: CurrentPrincipal) -> Principal:
        if principal.is_customer:
            raise HTTPException(status.HTTP_403_FORBIDDEN, "a customer token reads only its own sites")
        if not principal.has(scope):
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"this token lacks the {scope} scope "
                                f"(it has {', '.join(sorted(principal.scopes)) or 'none'})")
        return principal
    return check


FleetReader = Annotated[Principal, Depends(require(Scope.READ))]
AssetManager = Annotated[Principal, Depends(require(Scope.ASSETS))]
Dispatcher = Annotated[Principal, Depends(require(Scope.DISPATCH))]
Admin = Annotated[Principal, Depends(require(Scope.ADMIN))]


async def site_reader(site_id: str, principal: CurrentPrincipal) -> Principal:
    """Admit a fleet reader, or the customer owning ``site_id``; 403 otherwise (never 404: no probing)."""
    if not principal.may_read_site(site_id):
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"this token may not read site {site_id!r}")
    return principal


SiteReader = Annotated[Principal, Depends(site_reader)]
