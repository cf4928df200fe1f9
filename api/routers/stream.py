"""Server-sent events of live node updates and site status changes.

SSE rather than a WebSocket: the stream only flows one way, browsers reconnect
by themselves (``EventSource``), and it passes through HTTP proxies. Events:
``node`` (a NodeAggregate, times in epoch ms) and ``site_status`` (a
SiteStatus transition), each ``data:`` one JSON object with an ``id:``; the
stream opens with ``retry:`` (:data:`RETRY_MS`), and a reconnect with
``Last-Event-ID`` resumes after that event (:mod:`api.stream_hub`: or a
``gap`` event when it cannot); a comment line every :data:`KEEPALIVE_S` keeps
idle connections open. A customer gets the status of its own sites and no
node events.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Query, Request, status
from fastapi.responses import StreamingResponse

from api.auth import Principal, Scope
from api.deps import CurrentPrincipal, ResourcesDep
from api.stream_hub import StreamHub

router = APIRouter(prefix="/v1", tags=["stream"])

KEEPALIVE_S = 15.0
#: How long a browser waits before reconnecting (the SSE ``retry:`` field).
RETRY_MS = 3_000
Ids = Annotated[list[str] | None, Query(max_length=1000)]


def _filters(principal: Principal, nodes: list[str] | None,
             sites: list[str] | None) -> tuple[frozenset[str] | None, frozenset[str] | None]:
    """What this caller may and wants to see; 403 for anything it may not."""
    if principal.sites is None:
        if not principal.has(Scope.READ):
            raise HTTPException(status.HTTP_403_FORBIDDEN, "this token lacks the read scope")
        if not nodes and not sites:
            return None, None
        return frozenset(nodes or ()), frozenset(sites or ())
    if nodes:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "a customer token sees no fleet nodes")
    wanted = frozenset(sites) if sites else principal.sites
    if not wanted <= principal.sites:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "a customer token reads only its own sites")
    return frozenset(), wanted


def frame(event: dict[str, Any]) -> str:
    """One event as SSE: its id, its type, its data as one JSON line."""
    return f"id: {event['id']}\nevent: {event['type']}\ndata: {json.dumps(event['data'])}\n\n"


async def _events(request: Request, hub: StreamHub, nodes: frozenset[str] | None,
                  sites: frozenset[str] | None, last_event_id: str | None = None) -> AsyncIterator[str]:
    subscription = hub.subscribe(nodes, sites, last_event_id)
    try:
        yield f"retry: {RETRY_MS}\n: connected\n\n"
        while not await request.is_disconnected():
            try:
                event = await asyncio.wait_for(subscription.queue.get(), KEEPALIVE_S)
            except TimeoutError:
                yield ": keepalive\n\n"
                continue
            yield frame(event)
    finally:
        hub.unsubscribe(subscription)


@router.get("/stream", summary="Live node updates and site status changes (server-sent events)",
            response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}},
                             "description": "`event: node` and `event: site_status` with an `id:`, JSON "
                             "data; `event: gap` when a Last-Event-ID cannot be resumed."}})
async def stream(request: Request, principal: CurrentPrincipal, resources: ResourcesDep,
                 nodes: Ids = None, sites: Ids = None,
                 last_event_id: Annotated[str | None, Header(
                     alias="Last-Event-ID", max_length=100,
                     description="The id of the last event seen: the stream resumes after it.")] = None,
                 ) -> StreamingResponse:
    """Everything by default (a customer: its own sites); naming ``nodes`` and/or ``sites`` (repeatable)
    streams just those."""
    node_filter, site_filter = _filters(principal, nodes, sites)
    return StreamingResponse(_events(request, resources.hub, node_filter, site_filter, last_event_id),
                             media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
