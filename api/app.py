"""The API application: ``create_app(settings)`` wires routers, auth, errors and metrics.

One factory for every way the API runs (``vpp api``, ``vpp up``, tests and
benchmarks), so each gets the same routes; the connections live on
``app.state.resources`` and close when the app shuts down.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.telemetry import TelemetryConfig
from fastapi_offline import FastAPIOffline

from api import errors, live_lane
from api.metrics import MetricsMiddleware
from api.resources import Resources
from api.routers import (
    assets,
    bidding,
    dispatch,
    forecast,
    history,
    peak,
    plans,
    stream,
    system,
    telemetry,
    tokens,
)
from core.config import Settings, get_settings

DESCRIPTION = """
Live aggregates with coverage, hierarchy navigation (now or at any past time), site twins,
history at minute/hour/day resolution, asset changes, dispatch, device tokens and a live
event stream. Authenticate with `Authorization: Bearer <token>` (`vpp token api`); scopes
are `read`, `assets`, `dispatch`, `admin`; a customer token reads only its own sites.
The dashboard is at [/dashboard/](/dashboard/).
"""
#: Where Swagger UI's and ReDoc's scripts and style are served from (the fastapi-offline wheel's copies):
#: ``/docs`` and ``/redoc`` load no CDN asset, so they work on a disconnected network.
DOCS_ASSETS = "/docs-assets"
#: FastAPI's own OpenTelemetry instrumentation, off: the API's metrics are Prometheus (:mod:`api.metrics`)
#: and its request log is :data:`core.logs.ACCESS_LOGGER`; no OpenTelemetry provider is configured anywhere,
#: and FastAPI would otherwise ask the global providers whether one is, on every request.
NO_OPENTELEMETRY: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}


def create_app(settings: Settings | None = None) -> FastAPI:
    """The API for ``settings`` (default: from the environment).

    Raises MissingSecretError when a token secret the API needs (its own, and the
    gateway's, since it issues device tokens) is unset outside the local stack.
    """
    settings = settings or get_settings()
    settings.api_keys()
    settings.gateway_keys()
    resources = Resources(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await resources.close()

    app = FastAPIOffline(title="vpp API", version="1", description=DESCRIPTION, lifespan=lifespan,
                         static_url=DOCS_ASSETS, telemetry=NO_OPENTELEMETRY)
    app.state.resources = resources
    errors.register(app)
    for module in (telemetry, history, forecast, peak, plans, bidding, assets, dispatch, tokens, stream,
                   system):
        app.include_router(module.router)
    live_read = next(route for route in telemetry.router.routes
                     if isinstance(route, APIRoute) and route.path == live_lane.PATH)
    app.add_middleware(live_lane.LiveLane, resources=resources, route=live_read)  # added first: inner
    app.add_middleware(MetricsMiddleware)
    return app
