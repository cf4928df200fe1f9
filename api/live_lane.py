"""The live read's own lane: ``GET /v1/nodes/{id}`` answered beneath FastAPI whenever it can be.

The live aggregate is what dashboards and programs poll, a thousand times a
second across a fleet's users; FastAPI's routing, dependency solving and
exception layers cost about two thirds of that read's CPU. This ASGI
middleware answers the plain case itself: a GET of ``/v1/nodes/{id}`` with no
query string, a valid token that ``FleetReader`` admits, and a live aggregate
in Redis. It makes the same checks with the same code (:data:`api.deps.FLEET_READER`,
:func:`api.auth.verify_api_token`) and builds the same :class:`~api.models.Node`
(:func:`api.routers.telemetry.live_node`), serialised as the route's response.
Anything else (no or a bad token, a refused scope, an id the route would
refuse, a node without an aggregate, a query string, a Redis error) goes on to FastAPI
unchanged, which answers it as it always has: the lane can only ever give the
answer the route gives, sooner. It sits inside :class:`~api.metrics.MetricsMiddleware`
and names the route in the scope, so metrics and the access log are unchanged.
"""

from __future__ import annotations

import re

import redis
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from api.auth import AuthError, verify_api_token
from api.deps import FLEET_READER, bearer_token
from api.models import ID_PATTERN, Node
from api.resources import Resources
from api.routers.telemetry import live_node

PATH = "/v1/nodes/{node_id}"
_NODE_PATH = re.compile(r"/v1/nodes/(" + ID_PATTERN.strip("^$") + ")")
_SERIALIZER = Node.__pydantic_serializer__


class LiveLane:
    """Answer a plain live read of a node beneath FastAPI; hand every other request on."""

    def __init__(self, app: ASGIApp, resources: Resources, route: APIRoute) -> None:
        self.app = app
        self.resources = resources
        self.route = route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await self._answer(scope) if scope["type"] == "http" else None
        if body is None:
            await self.app(scope, receive, send)
            return
        scope["route"] = self.route  # what the metrics label and the access log name
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(body)).encode()),
                                (b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})

    async def _answer(self, scope: Scope) -> bytes | None:
        """The response body, or None when FastAPI should answer."""
        if scope["method"] != "GET" or scope["query_string"]:
            return None
        match = _NODE_PATH.fullmatch(scope["path"])
        token = _bearer(scope) if match else None
        if match is None or token is None:
            return None
        try:
            principal = verify_api_token(self.resources.settings, token)
        except AuthError:
            return None
        if FLEET_READER.refusal(principal) is not None:
            return None
        try:
            node = await live_node(self.resources, match[1])
        except redis.RedisError:
            return None  # the route reads again and answers the failure as every route does (a 503)
        return None if node is None else _SERIALIZER.to_json(node)


def _bearer(scope: Scope) -> str | None:
    """The token of the ``Authorization: Bearer`` header, read as the route reads it, or None."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            return bearer_token(value.decode("latin-1"))
    return None
