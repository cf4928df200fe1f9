"""Typed dependencies, so a route's signature says what it needs and who may call it.

``FleetReader`` and the other principal aliases check the bearer token and
its scope before the route runs. Each is one dependency, a subclass of
FastAPI's ``SecurityBase`` (so OpenAPI documents the same ``HTTPBearer``
scheme) that reads the header, verifies the token and checks the scope
itself: FastAPI resolves every dependency of every request anew, at a cost
per dependency, and the former chain (bearer scheme, settings, principal,
scope check) was a third of the live read's CPU. They are ``async``: they do
no I/O, and a plain ``def`` dependency would cost a thread-pool hop. A
customer token passes only ``SiteReader``-guarded routes, and only for its
own sites. The stream also takes the token as ``?token=`` because browsers
cannot set headers on an EventSource.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.openapi.models import HTTPBearer as HTTPBearerModel
from fastapi.security.base import SecurityBase
from fastapi.security.utils import get_authorization_scheme_param
from starlette.requests import HTTPConnection

from api.auth import AuthError, Principal, Scope, verify_api_token
from api.resources import Resources
from core.config import Settings

#: How OpenAPI names the scheme (the name it had as a plain HTTPBearer), and what it says.
SCHEME_NAME = "HTTPBearer"
SCHEME_DESCRIPTION = "An API token (`vpp token api`), as `Bearer <token>`."


def resources_of(request: HTTPConnection) -> Resources:
    """The process's shared clients, for a hot route that takes the request instead of one more dependency."""
    resources: Resources = request.app.state.resources
    return resources


async def get_resources(request: Request) -> Resources:
    """The process's shared clients."""
    return resources_of(request)


async def get_settings(request: Request) -> Settings:
    """The settings the app was made with."""
    settings: Settings = request.app.state.resources.settings
    return settings


ResourcesDep = Annotated[Resources, Depends(get_resources)]
SettingsDep = Annotated[Settings, Depends(get_settings)]


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail, headers={"WWW-Authenticate": "Bearer"})


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value, or None."""
    scheme, credentials = get_authorization_scheme_param(authorization)
    return credentials if scheme.lower() == "bearer" and credentials else None


class BearerPrincipal(SecurityBase):
    """The caller, from ``Authorization: Bearer`` (or ``?token=``); 401 without a valid token.

    A security scheme itself (the model and name of FastAPI's ``HTTPBearer``, so OpenAPI is unchanged)
    that also verifies the token: one dependency where there were four.
    """

    def __init__(self) -> None:
        self.model = HTTPBearerModel(description=SCHEME_DESCRIPTION)
        self.scheme_name = SCHEME_NAME

    async def __call__(self, request: HTTPConnection) -> Principal:
        raw = bearer_token(request.headers.get("Authorization")) or request.query_params.get("token")
        if not raw:
            raise _unauthorized("missing bearer token: send `Authorization: Bearer <token>` "
                                "(issue one with `vpp token api`)")
        try:
            return verify_api_token(resources_of(request).settings, raw)
        except AuthError as exc:
            raise _unauthorized(str(exc)) from None


class ScopedBearer(BearerPrincipal):
    """A fleet token with ``scope`` (admin carries all); customers get 403."""

    def __init__(self, scope: Scope) -> None:
        super().__init__()
        self.scope = scope

    async def __call__(self, request: HTTPConnection) -> Principal:
        principal = await super().__call__(request)
        refusal = self.refusal(principal)
        if refusal is not None:
            raise HTTPException(status.HTTP_403_FORBIDDEN, refusal)
        return principal

    def refusal(self, principal: Principal) -> str | None:
        """Why ``principal`` may not pass (a 403's detail), or None."""
        if principal.is_customer:
            return "a customer token reads only its own sites"
        if not principal.has(self.scope):
            return (f"this token lacks the {self.scope} scope "
                    f"(it has {', '.join(sorted(principal.scopes)) or 'none'})")
        return None


CurrentPrincipal = Annotated[Principal, Depends(BearerPrincipal())]
#: The check of ``FleetReader`` (also made by :mod:`api.live_lane`).
FLEET_READER = ScopedBearer(Scope.READ)
FleetReader = Annotated[Principal, Depends(FLEET_READER)]
AssetManager = Annotated[Principal, Depends(ScopedBearer(Scope.ASSETS))]
Dispatcher = Annotated[Principal, Depends(ScopedBearer(Scope.DISPATCH))]
Admin = Annotated[Principal, Depends(ScopedBearer(Scope.ADMIN))]


async def site_reader(site_id: str, principal: CurrentPrincipal) -> Principal:
    """Admit a fleet reader, or the customer owning ``site_id``; 403 otherwise (never 404: no probing)."""
    if not principal.may_read_site(site_id):
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"this token may not read site {site_id!r}")
    return principal


SiteReader = Annotated[Principal, Depends(site_reader)]
