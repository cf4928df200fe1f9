"""Site plans (co-optimisation): aggregate plans of nodes, sites' latest plans, storm watches.

A node's aggregate plan comes from the plans dataflow's Redis hash
``plan:node:{id}``, a site's latest plan from ClickHouse ``site_plan``; a node
or site without one yet is a 404 naming why. Storm
watches go through :mod:`core.storm` (the same checks as ``vpp storm``): raising
or clearing one needs the dispatch scope (it changes what sites do), reading
them the read scope.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, status
from fastapi.concurrency import run_in_threadpool

from api.deps import Dispatcher, FleetReader, ResourcesDep, SiteReader
from api.models import (
    EARLIEST,
    ID_PATTERN,
    LATEST,
    NodePlanInterval,
    NodePlanPublic,
    Page,
    SitePlanInterval,
    SitePlanPublic,
    StormWatchCreate,
    StormWatchPublic,
    UtcTime,
    from_ms,
    utc,
)
from api.plan_intervals import planned_intervals
from core import keys, storm

router = APIRouter(prefix="/v1", tags=["plans"])

NodeId = Annotated[str, Path(pattern=ID_PATTERN, description="A node id, e.g. feeder-0-3 or program-1.")]
SiteId = Annotated[str, Path(pattern=ID_PATTERN, description="A site id, e.g. site-0-000001.")]

Start = Annotated[UtcTime | None, Query(description="Intervals from (default: 24 h before end).")]
End = Annotated[UtcTime | None, Query(description="Intervals before (default: 24 h from now).")]
Limit = Annotated[int, Query(ge=1, le=10_000, description="Intervals per page.")]
Offset = Annotated[int, Query(ge=0, le=1_000_000, description="Intervals to skip before the page.")]
# A site plan covers the next 24 h: plans issued this long before a range can still cover it.
PLAN_REACH = timedelta(days=2)


def _span(start: datetime | None, end: datetime | None) -> tuple[datetime, datetime]:
    """The checked range of a plan-history request; 422 naming the problem otherwise."""
    lowest = EARLIEST + PLAN_REACH
    for name, value in (("start", start), ("end", end)):
        if value is not None and not lowest <= utc(value) <= LATEST:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                                f"{name} must be within {lowest.date()} and {LATEST.date()}")
    last = utc(end) if end is not None else datetime.now(UTC) + timedelta(days=1)
    first = utc(start) if start is not None else last - timedelta(days=1)
    if not (lowest <= first < last <= LATEST):
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                            f"need {(EARLIEST + PLAN_REACH).date()} <= start < end <= {LATEST.date()}")
    return first, last


def _time(value: str) -> datetime:
    parsed = from_ms(value)
    assert parsed is not None
    return parsed


@router.get("/nodes/{node_id}/plan", summary="A node's aggregate plan: what its sites will do anyway")
async def node_plan(node_id: NodeId, _: FleetReader, resources: ResourcesDep) -> NodePlanPublic:
    """The sum of the latest plans of the node's member sites per interval, with coverage and estimate."""
    fields = await resources.hash(keys.node_plan(node_id))
    if not fields or not int(fields.get("expected_sites", "0")):
        raise HTTPException(status.HTTP_404_NOT_FOUND,
                            f"no aggregate plan for node {node_id!r}: unknown node, no member sites, "
                            "or the plans dataflow has not aggregated it yet")
    return NodePlanPublic(
        node_id=node_id, hierarchy=fields.get("hierarchy", ""), start=_time(fields["start_ms"]),
        interval_minutes=int(fields["interval_minutes"]), planned_kw=json.loads(fields["planned_kw"]),
        estimate_kw=json.loads(fields["estimate_kw"]), planned_sites=json.loads(fields["planned_sites"]),
        carried_sites=json.loads(fields["carried_sites"]), coverage=json.loads(fields["coverage"]),
        expected_sites=int(fields["expected_sites"]), stale_sites=int(fields["stale_sites"]),
        computed_at=_time(fields["computed_at"]))


@router.get("/sites/{site_id}/plan", summary="A site's latest accepted plan")
def site_plan(site_id: SiteId, _: SiteReader, resources: ResourcesDep) -> SitePlanPublic:
    """The newest plan the site sent that passed the checks against its limits and reserve (site_plan)."""
    with resources.history() as store:
        latest = store.site_plans(site_id, EARLIEST, LATEST, latest_only=True)
    if not latest:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no plan from site {site_id!r} yet")
    return SitePlanPublic(**asdict(latest[0]))


@router.get("/nodes/{node_id}/plan/history", summary="A node's aggregate plan per interval, over a range")
def node_plan_history(node_id: NodeId, _: FleetReader, resources: ResourcesDep, start: Start = None,
                      end: End = None, limit: Limit = 2000, offset: Offset = 0) -> Page[NodePlanInterval]:
    """The latest aggregate plan of each interval in [start, end), oldest first (``node_plan``).

    Set against the node's history (``battery_kw``, the same sign: + = discharge) it shows plan
    against actual; ``coverage`` says how much of the fleet the plan speaks for.
    """
    first, last = _span(start, end)
    with resources.history() as store:
        rows = store.node_plan(node_id, first, last)
    data = [NodePlanInterval(**{k: v for k, v in asdict(r).items() if k not in ("node_id", "hierarchy")})
            for r in rows[offset:offset + limit]]
    return Page(data=data, count=len(rows))


@router.get("/sites/{site_id}/plan/history", summary="What a site planned per interval, over a range")
def site_plan_history(site_id: SiteId, _: SiteReader, resources: ResourcesDep, start: Start = None,
                      end: End = None, limit: Limit = 2000, offset: Offset = 0) -> Page[SitePlanInterval]:
    """For each interval in [start, end): the newest accepted plan issued before the interval ended.

    ``power_kw`` is battery power, + = discharge, as in the site's history (``battery_kw_mean``).
    """
    first, last = _span(start, end)
    with resources.history() as store:
        plans = store.site_plans(site_id, first - PLAN_REACH, last)
    rows = planned_intervals(plans, first, last)
    data = [SitePlanInterval(**asdict(r)) for r in rows[offset:offset + limit]]
    return Page(data=data, count=len(rows))


def _public(watch: storm.Watch) -> StormWatchPublic:
    return StormWatchPublic(node_id=watch.node_id, starts=watch.starts, until=watch.until, sites=watch.sites,
                            raised_by=watch.raised_by, raised_at=watch.raised_at)


@router.post("/storm-watch", status_code=status.HTTP_201_CREATED, summary="Raise a storm watch over a node")
def raise_storm_watch(body: StormWatchCreate, principal: Dispatcher,
                      resources: ResourcesDep) -> StormWatchPublic:
    """The node's sites plan a full battery from ``starts`` until the watch lapses (replaces one in force)."""
    try:
        watch = storm.raise_watch(resources.redis, resources.producer, body.node_id,
                                  None if body.starts is None else utc(body.starts), utc(body.until),
                                  principal.subject, datetime.now(UTC))
    except storm.StormWatchNotFoundError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    except storm.StormWatchError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
    except RuntimeError as exc:  # the broker did not take it
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from None
    return _public(watch)


@router.get("/storm-watch", summary="The storm watches in force")
async def list_storm_watches(_: FleetReader, resources: ResourcesDep) -> Page[StormWatchPublic]:
    """Every storm watch that has not lapsed, by node."""
    watches = await run_in_threadpool(storm.list_watches, resources.redis)
    return Page(data=[_public(w) for w in watches], count=len(watches))


@router.delete("/storm-watch/{node_id}", summary="Clear the storm watch over a node")
def clear_storm_watch(node_id: NodeId, principal: Dispatcher, resources: ResourcesDep) -> StormWatchPublic:
    """Lift the watch at the node's sites; their next plans are the owner's again. 404 if none is in force."""
    try:
        watch = storm.clear_watch(resources.redis, resources.producer, node_id, principal.subject)
    except storm.StormWatchNotFoundError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    except RuntimeError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from None
    return _public(watch)
