"""Asset changes with effective times, through the registry (``assets`` scope).

Every operation goes to :class:`assets.service.AssetService` (validate in the
registry, then ClickHouse, Redis navigation and ``assets.changes``; a new site
also gets its record in ``asset_sites``). A refused change (wrong parent kind, an effective time
before the edge it replaces, ...) is a 422 carrying the registry's reason.
"""

from __future__ import annotations

from dataclasses import fields
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, status

from api.deps import AssetManager, ResourcesDep
from api.models import (
    ID_PATTERN,
    Change,
    Effective,
    EffectiveAt,
    Enrollment,
    NodeReparent,
    SiteCreate,
    SiteMove,
)
from api.routers.telemetry import NodeId, SiteId
from assets.generator import Site
from assets.service import AssetService
from core.hierarchy import ELECTRICAL, GEOGRAPHIC

router = APIRouter(prefix="/v1/assets", tags=["assets"])

ProgramId = Annotated[str, Path(pattern=ID_PATTERN)]


def _when(at: datetime | None) -> datetime:
    return at if at is not None else datetime.now(UTC)  # bodies and queries give UTC already (EffectiveAt)


def _site_of(service: AssetService, site_id: str) -> None:
    if site_id not in service.fleet.registry.sites:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"unknown site {site_id!r}")


@router.post("/sites", status_code=status.HTTP_201_CREATED, summary="Add a site")
def create_site(body: SiteCreate, _: AssetManager, resources: ResourcesDep) -> Change:
    """A new site under a feeder and a postcode, enrolled in programs, from ``at``."""
    at = _when(body.at)
    with resources.assets() as service:
        site = Site(**body.model_dump(include={f.name for f in fields(Site)}))
        parents = {ELECTRICAL: body.feeder_id, GEOGRAPHIC: body.postcode_id}
        return Change(change_id=service.add_site(site, parents, body.programs, at), at=at)


@router.post("/sites/{site_id}/move", summary="Move a site to another feeder or postcode")
def move_site(site_id: SiteId, body: SiteMove, _: AssetManager, resources: ResourcesDep) -> Change:
    """The site (and its contribution to every aggregate) moves from ``at`` on."""
    at = _when(body.at)
    with resources.assets() as service:
        _site_of(service, site_id)
        return Change(change_id=service.move_site(site_id, body.hierarchy, body.parent_id, at), at=at)


@router.post("/sites/{site_id}/retire", summary="Retire a site")
def retire_site(site_id: SiteId, body: Effective, _: AssetManager, resources: ResourcesDep) -> Change:
    """Every edge of the site closes at ``at``."""
    at = _when(body.at)
    with resources.assets() as service:
        _site_of(service, site_id)
        return Change(change_id=service.retire_site(site_id, at), at=at)


@router.post("/sites/{site_id}/enrollments", status_code=status.HTTP_201_CREATED,
             summary="Enrol a site in a program")
def enroll(site_id: SiteId, body: Enrollment, _: AssetManager, resources: ResourcesDep) -> Change:
    """The site counts towards the program from ``at``."""
    at = _when(body.at)
    with resources.assets() as service:
        _site_of(service, site_id)
        return Change(change_id=service.enroll(site_id, body.program_id, at), at=at)


@router.delete("/sites/{site_id}/enrollments/{program_id}", summary="End a site's enrolment")
def unenroll(site_id: SiteId, program_id: ProgramId, _: AssetManager, resources: ResourcesDep,
             at: Annotated[EffectiveAt, Query()] = None,
             ) -> Change:
    """The site leaves the program at ``at``."""
    when = _when(at)
    with resources.assets() as service:
        _site_of(service, site_id)
        return Change(change_id=service.unenroll(site_id, program_id, when), at=when)


@router.post("/nodes/{node_id}/reparent", summary="Re-parent a node")
def reparent_node(node_id: NodeId, body: NodeReparent, _: AssetManager, resources: ResourcesDep) -> Change:
    """The node and every site below it move under ``parent_id`` from ``at``."""
    at = _when(body.at)
    with resources.assets() as service:
        if node_id not in service.fleet.registry.nodes:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"unknown node {node_id!r}")
        return Change(change_id=service.reparent_node(node_id, body.parent_id, at), at=at)
