"""Live aggregates, site twins and hierarchy navigation.

Now comes from Redis (the live twin and the navigation sets the asset
registry keeps current); a past time (``?at=``) comes from the registry's
effective-dated edges. The live aggregate read is the hot path: one HGETALL
on the event loop, the registry (on the thread pool) only when the node has no
aggregate yet.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, Request, status
from fastapi.concurrency import run_in_threadpool

from api.deps import FleetReader, ResourcesDep, SiteReader, resources_of
from api.models import ID_PATTERN, Ancestry, Node, NodeAggregate, NodeRef, Page, SiteTwin, UtcTime, utc
from api.resources import Resources
from assets.generator import Fleet
from core import keys
from core.hierarchy import HIERARCHY_OF_KIND, PARENT_KIND

router = APIRouter(prefix="/v1", tags=["telemetry"])

NodeId = Annotated[str, Path(pattern=ID_PATTERN, description="A node id, e.g. feeder-0-3 or program-1.")]
SiteId = Annotated[str, Path(pattern=ID_PATTERN, description="A site id, e.g. site-0-000001.")]
At = Annotated[UtcTime | None, Query(description="Navigate the hierarchy as it was at this time "
                                                  "(default: now, from the live view).")]
Limit = Annotated[int, Query(ge=1, le=10_000)]
#: Bounded so that a store given the offset (Redis takes a 64-bit integer) never sees one it refuses.
Offset = Annotated[int, Query(ge=0, le=100_000_000, description="Items to skip before the page.")]


def _known_node(fleet: Fleet, node_id: str) -> None:
    if node_id not in fleet.registry.nodes:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"unknown node {node_id!r}: GET /v1/nodes lists them")


def _kind(fleet: Fleet, ident: str) -> str:
    node = fleet.registry.nodes.get(ident)
    return node.kind if node is not None else "site"


@router.get("/nodes", summary="Every node, optionally of some kinds")
def list_nodes(_: FleetReader, resources: ResourcesDep,
               kind: Annotated[list[str] | None, Query(description="Only these kinds (repeatable).")] = None,
               roots: Annotated[bool, Query(description="Only nodes without a parent.")] = False,
               limit: Limit = 1000, offset: Offset = 0,
               ) -> Page[NodeRef]:
    """Nodes from the registry, ordered by kind and id, a page of them (``count`` is the total)."""
    with resources.fleet.use() as fleet:
        nodes = [n for n in fleet.registry.nodes.values()
                 if (kind is None or n.kind in kind) and (not roots or PARENT_KIND[n.kind] is None)]
    ordered = sorted(nodes, key=lambda n: (n.kind, n.node_id))
    data = [NodeRef(id=n.node_id, kind=n.kind) for n in ordered[offset:offset + limit]]
    return Page(data=data, count=len(ordered))


@router.get("/nodes/{node_id}", summary="A node's live aggregate with coverage and estimate")
async def get_node(node_id: NodeId, _: FleetReader, request: Request) -> Node:
    """Measured values from reporting sites, estimates including delayed/offline ones, coverage."""
    resources = resources_of(request)  # the request, not ResourcesDep: one dependency fewer on the hot path
    live = await live_node(resources, node_id)
    return live if live is not None else await run_in_threadpool(_registered_node, resources, node_id)


async def live_node(resources: Resources, node_id: str) -> Node | None:
    """The node with its live aggregate from Redis; None while the dataflow has written none.

    Shared by the route and :mod:`api.live_lane` (the same read below FastAPI).
    """
    fields = await resources.hash(keys.node(node_id))
    if not fields or "node_kind" not in fields:
        return None
    kind = fields["node_kind"]
    known = resources.fleet.current  # no lock, no refresh: the hot path never waits for the registry
    name = known.registry.nodes[node_id].name if known and node_id in known.registry.nodes else node_id
    return Node(node_id=node_id, kind=kind, name=name,
                hierarchy=fields.get("hierarchy") or HIERARCHY_OF_KIND.get(kind, ""),
                live=NodeAggregate.from_hash(fields, resources.settings.offline_after_s))


def _registered_node(resources: Resources, node_id: str) -> Node:
    """A node without a live aggregate, from the registry; 404 if unknown.

    Blocking (the registry lock, and a reload from ClickHouse when stale), so
    the async routes run it on the thread pool, never on the event loop.
    """
    with resources.fleet.use() as fleet:
        _known_node(fleet, node_id)
        node = fleet.registry.nodes[node_id]
    return Node(node_id=node_id, kind=node.kind, name=node.name, hierarchy=node.hierarchy, live=None)


@router.get("/nodes/{node_id}/children", summary="A node's direct children (nodes or sites)")
def node_children(node_id: NodeId, _: FleetReader, resources: ResourcesDep, at: At = None,
                  limit: Limit = 1000, offset: Offset = 0) -> Page[NodeRef]:
    """Children now (Redis navigation) or at ``at`` (registry)."""
    with resources.fleet.use() as fleet:
        _known_node(fleet, node_id)
        if at is None:
            ids = resources.members(keys.node_children(node_id))
        else:
            ids = sorted(e.child_id for e in fleet.registry.children(node_id, utc(at)))
        data = [NodeRef(id=i, kind=_kind(fleet, i)) for i in ids[offset:offset + limit]]
    return Page(data=data, count=len(ids))


@router.get("/nodes/{node_id}/parents", summary="A node's parents")
def node_parents(node_id: NodeId, _: FleetReader, resources: ResourcesDep, at: At = None) -> Page[NodeRef]:
    """The parent in the node's hierarchy (none for a region, state or program)."""
    with resources.fleet.use() as fleet:
        _known_node(fleet, node_id)
        if at is None:
            ids = resources.members(keys.node_parents(node_id))
        else:
            ids = fleet.registry.parents(node_id, fleet.registry.nodes[node_id].hierarchy, utc(at))
        data = [NodeRef(id=i, kind=_kind(fleet, i)) for i in ids]
    return Page(data=data, count=len(data))


@router.get("/nodes/{node_id}/sites", summary="Every site below a node")
def node_sites(node_id: NodeId, _: FleetReader, resources: ResourcesDep, at: At = None,
               limit: Limit = 1000, offset: Offset = 0) -> Page[str]:
    """Member sites now (Redis) or at ``at`` (registry), sorted, paged."""
    with resources.fleet.use() as fleet:
        _known_node(fleet, node_id)
        if at is None:
            ids = resources.members(keys.node_sites(node_id))
        else:
            ids = sorted(fleet.registry.members(node_id, utc(at)))
    return Page(data=ids[offset:offset + limit], count=len(ids))


@router.get("/nodes/{node_id}/sites/twins", summary="The live twins of a page of a node's sites")
def node_site_twins(node_id: NodeId, _: FleetReader, resources: ResourcesDep,
                    limit: Annotated[int, Query(ge=1, le=1000)] = 100, offset: Offset = 0) -> Page[SiteTwin]:
    """Status, last seen, power and state of charge of the node's sites (sorted by id), one Redis round trip.

    The operator's site list: ``/sites`` gives the ids, this gives what each site says now.
    """
    with resources.fleet.use() as fleet:
        _known_node(fleet, node_id)
    ids = resources.members(keys.node_sites(node_id))
    page = ids[offset:offset + limit]
    pipe = resources.redis.pipeline(transaction=False)
    for site_id in page:
        pipe.hgetall(keys.site(site_id))
    answers = pipe.execute()
    twins = [SiteTwin.from_hash(site_id, fields) for site_id, fields in zip(page, answers, strict=True)]
    return Page(data=twins, count=len(ids))


@router.get("/sites/{site_id}", summary="A site's live twin")
async def get_site(site_id: SiteId, _: SiteReader, request: Request) -> SiteTwin:
    """Latest telemetry, status (ONLINE/DELAYED/OFFLINE), last seen, limits and available energy."""
    resources = resources_of(request)
    fields = await resources.hash(keys.site(site_id))
    if not fields:
        await run_in_threadpool(known_site, resources, site_id)
    return SiteTwin.from_hash(site_id, fields)


def known_site(resources: Resources, site_id: str) -> None:
    """404 unless the registry knows the site (blocking: from ``def`` routes, or via run_in_threadpool)."""
    with resources.fleet.use() as fleet:
        if site_id not in fleet.sites:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"unknown site {site_id!r}")


@router.get("/sites/{site_id}/ancestors", summary="A site's ancestors in every hierarchy")
def site_ancestors(site_id: SiteId, _: FleetReader, resources: ResourcesDep, at: At = None) -> Ancestry:
    """Nearest first per hierarchy; every program the site is enrolled in. Fleet tokens only."""
    when = utc(at) if at is not None else datetime.now(UTC)
    with resources.fleet.use() as fleet:
        if site_id not in fleet.registry.sites:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"unknown site {site_id!r}")
        chains = fleet.registry.ancestors(site_id, when)
    return Ancestry(site_id=site_id, at=when, electrical=chains["electrical"],
                    geographic=chains["geographic"], program=chains["program"])

