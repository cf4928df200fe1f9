"""Server-sent events of live node updates and site status changes.

SSE rather than a WebSocket: the stream only flows one way, browsers reconnect
by themselves (``EventSource``), and it passes through HTTP proxies. Events:
``node`` (a NodeAggregate, times in epoch ms) and ``site_status`` (a
SiteStatus transition), each ``data:`` one JSON object; a comment line every
:data:`KEEPALIVE_S` keeps idle connections open. A customer gets the status
of its own sites and no node events.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request, status
from fastapi.responses import StreamingResponse

from api.auth import Principal, Scope
from api.deps import CurrentPrincipal, ResourcesDep
from api.stream_hub import StreamHub

router = APIRouter(prefix="/v1", tags=["stream"])

KEEPALIVE_S = 15.0
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


async def _events(request: Request, hub: StreamHub, nodes: frozenset[str] | None,
                  sites: frozenset[str] | None) -> AsyncIterator[str]:
    subscription = hub.subscribe(nodes, sites)
    try:
        yield ": connected\n\n"
        while not await request.is_disconnected():
            try:
                event = await asyncio.wait_for(subscription.queue.get(), KEEPALIVE_S)
            except TimeoutError:
                yield ": keepalive\n\n"
                continue
            yield f"event: {event['type']}\ndata: {json.dumps(event['data'])}\n\n"
    finally:
        hub.unsubscribe(subscription)


@router.get("/stream", summary="Live node updates and site status changes (server-sent events)",
            response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}},
                             "description": "`event: node` and `event: site_status`, JSON data."}})
async def stream(request: Request, principal: CurrentPrincipal, resources: ResourcesDep,
                 nodes: Ids = None, sites: Ids = None) -> StreamingResponse:
    """Everything by default (a customer: its own sites); naming ``nodes`` and/or ``sites`` (repeatable)
    streams just those."""
    node_filter, site_filter = _filters(principal, nodes, sites)
    return StreamingResponse(_events(request, resources.hub, node_filter, site_filter),
                             media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
