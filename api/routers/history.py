"""History of nodes and sites over any range, from the minute, hour or day tables.

``resolution=auto`` picks minutes up to two days, hours up to 90 days and
days beyond (:func:`core.history.choose_resolution`), so a year is a few
hundred rows; a requested resolution is honoured if the answer stays within
:data:`MAX_POINTS` windows, else the request is refused with a 422 that names a
coarser one, before anything reaches ClickHouse.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status

from api.deps import FleetReader, ResourcesDep, SiteReader
from api.models import (
    EARLIEST,
    LATEST,
    History,
    NodePoint,
    Page,
    ResolutionChoice,
    SiteCommand,
    SitePoint,
    UtcTime,
    utc,
)
from api.routers.telemetry import NodeId, SiteId, known_site
from core.history import Resolution, choose_resolution

router = APIRouter(prefix="/v1", tags=["history"])

MAX_POINTS = 50_000
WINDOW = {"minute": timedelta(minutes=1), "hour": timedelta(hours=1), "day": timedelta(days=1)}
DEFAULT_SPAN = timedelta(hours=24)

Start = Annotated[UtcTime | None, Query(description="Inclusive start (default: 24 h before end).")]
End = Annotated[UtcTime | None, Query(description="Exclusive end (default: now).")]
ResolutionParam = Annotated[ResolutionChoice, Query(description="minute, hour, day or auto (by range).")]


def _range(start: datetime | None, end: datetime | None, resolution: ResolutionChoice,
           ) -> tuple[datetime, datetime, Resolution]:
    """The checked range and resolution of a request; 422 with what to change otherwise."""
    end_utc = utc(end) if end is not None else datetime.now(UTC)
    start_utc = utc(start) if start is not None else end_utc - DEFAULT_SPAN
    for name, value in (("start", start_utc), ("end", end_utc)):
        if not EARLIEST <= value <= LATEST:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                                f"{name} {value.isoformat()} is outside the history's range "
                                f"({EARLIEST.year} to {LATEST.year})")
    if end_utc <= start_utc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                            f"end {end_utc.isoformat()} must be after start {start_utc.isoformat()}")
    chosen: Resolution = choose_resolution(start_utc, end_utc) if resolution == "auto" else resolution
    if (end_utc - start_utc) / WINDOW[chosen] > MAX_POINTS:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                            f"{end_utc - start_utc} at {chosen} resolution is more than {MAX_POINTS:,} "
                            "windows: ask for a coarser resolution (hour, day) or use resolution=auto")
    return start_utc, end_utc, chosen


@router.get("/nodes/{node_id}/history", summary="A node's history")
def node_history(node_id: NodeId, _: FleetReader, resources: ResourcesDep, start: Start = None,
                 end: End = None, resolution: ResolutionParam = "auto") -> History[NodePoint]:
    """Node windows in [start, end): summed powers, energy, coverage."""
    first, last, chosen = _range(start, end, resolution)
    with resources.fleet.use() as fleet:
        if node_id not in fleet.registry.nodes:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"unknown node {node_id!r}")
    with resources.history() as store:
        rows = store.node_history(node_id, first, last, chosen)
    data = [NodePoint.model_validate(row, from_attributes=True) for row in rows]
    return History(id=node_id, start=first, end=last, resolution=chosen, data=data, count=len(data))


@router.get("/sites/{site_id}/history", summary="A site's history")
def site_history(site_id: SiteId, _: SiteReader, resources: ResourcesDep, start: Start = None,
                 end: End = None, resolution: ResolutionParam = "auto") -> History[SitePoint]:
    """Site windows in [start, end): mean/min/max battery power, SoC, samples, coverage."""
    first, last, chosen = _range(start, end, resolution)
    known_site(resources, site_id)
    with resources.history() as store:
        rows = store.site_history(site_id, first, last, chosen)
    data = [SitePoint.model_validate(row, from_attributes=True) for row in rows]
    return History(id=site_id, start=first, end=last, resolution=chosen, data=data, count=len(data))


@router.get("/sites/{site_id}/commands", summary="Commands a site received")
def site_commands(site_id: SiteId, _: SiteReader, resources: ResourcesDep, start: Start = None,
                  end: End = None,
                  limit: Annotated[int, Query(ge=1, le=10_000)] = 200) -> Page[SiteCommand]:
    """Every command sent to the site in [start, end) and each answer (``command_log``), newest first."""
    first, last, _resolution = _range(start, end, "auto")
    known_site(resources, site_id)
    with resources.history() as store:
        rows = store.site_commands(site_id, first, last, limit)
    data = [SiteCommand.model_validate(row, from_attributes=True) for row in rows]
    return Page(data=data, count=len(data))
