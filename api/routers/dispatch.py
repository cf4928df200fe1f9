"""Dispatch: ask a node or sites for power over a window, see how it goes, cancel it.

The checks and the request record are :mod:`core.dispatch`'s, shared with the
CLI, so a request is refused the same way from either (a 422 carrying its
message). The status is what the control dataflow keeps in ``dispatch:{id}``;
the error over time is its ``dispatch_log`` rows.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, Response, status

from api.deps import Dispatcher, FleetReader, ResourcesDep
from api.models import (
    ID_PATTERN,
    DispatchAccepted,
    DispatchCreate,
    DispatchPoint,
    DispatchStatus,
    DispatchSummary,
    Page,
    UtcTime,
    from_ms,
    utc,
)
from api.routers.telemetry import Offset
from core import dispatch
from core.dispatch_spec import DispatchSpec

router = APIRouter(prefix="/v1/dispatch", tags=["dispatch"])

DispatchId = Annotated[str, Path(pattern=ID_PATTERN, description="A dispatch id.")]
_STATUS_FLOATS = ("target_kw", "measured_kw", "error_kw", "shortfall_kw", "requested_kwh", "delivered_kwh",
                  "tracking_error_mean_kw", "tracking_error_p95_kw")
_STATUS_COUNTS = ("sites_total", "sites_acked", "sites_pending", "sites_rejected", "sites_unavailable",
                  "priority", "sites_acknowledged", "sites_following")


@router.post("", status_code=status.HTTP_202_ACCEPTED, summary="Start (or replace) a dispatch",
             responses={409: {"description": "The dispatch id is already used (and `replace` is not set)."}})
def create_dispatch(body: DispatchCreate, principal: Dispatcher, resources: ResourcesDep,
                    response: Response) -> DispatchAccepted:
    """Checked and sent to ``dispatch.requests``; control takes it from there (409 for a used id)."""
    spec_args = {"dispatch_id": body.dispatch_id} if body.dispatch_id is not None else {}
    spec = DispatchSpec(
        target_kw=body.target_kw, start=utc(body.start) if body.start else datetime.now(UTC),
        end=utc(body.end), node_id=body.node_id,
        site_ids=tuple(body.site_ids) if body.site_ids is not None else None, strategy=body.strategy,
        priority=body.priority, **spec_args)
    try:
        dispatch_id = dispatch.submit(resources.settings, spec, principal.subject, resources.redis,
                                      resources.producer, replace=body.replace)
    except RuntimeError as exc:  # the broker did not take the request
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from None
    location = f"/v1/dispatch/{dispatch_id}"
    response.headers["Location"] = location
    return DispatchAccepted(dispatch_id=dispatch_id, status_url=location)


@router.get("", summary="Recent dispatches")
def list_dispatches(_: FleetReader, resources: ResourcesDep,
                    since: Annotated[UtcTime | None,
                                     Query(description="Windows starting at or after.")] = None,
                    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                    offset: Offset = 0) -> Page[DispatchSummary]:
    """Dispatches with their state, node and window, newest window first; ``count`` is the total."""
    begin = utc(since) if since else None
    ids = dispatch.list_dispatches(resources.redis, begin, limit, offset)
    summaries = []
    for ident in ids:
        now = dispatch.read_status(resources.redis, ident) or {}
        summaries.append(DispatchSummary(
            dispatch_id=ident, state=now.get("state") or None, node_id=now.get("node_id") or None,
            start=from_ms(now.get("start")), end=from_ms(now.get("end")),
            target_kw=float(now["target_kw"]) if now.get("target_kw") else None,
            requested_kwh=float(now["requested_kwh"]) if now.get("requested_kwh") else None,
            delivered_kwh=float(now["delivered_kwh"]) if now.get("delivered_kwh") else None,
            reason=now.get("reason") or None,
            sites_total=int(float(now["sites_total"])) if now.get("sites_total") else None,
            shortfall_kw=float(now["shortfall_kw"]) if now.get("shortfall_kw") else None))
    return Page(data=summaries, count=dispatch.count_dispatches(resources.redis, begin))


@router.get("/{dispatch_id}", summary="A dispatch's status and its error over time")
def get_dispatch(dispatch_id: DispatchId, _: FleetReader, resources: ResourcesDep) -> DispatchStatus:
    """The newest status (Redis) and every status logged so far (ClickHouse ``dispatch_log``)."""
    current = dispatch.read_status(resources.redis, dispatch_id)
    with resources.history() as store:
        points = [DispatchPoint.model_validate(entry, from_attributes=True)
                  for entry in store.dispatch_log(dispatch_id)]
    if current is None and not points:
        raise HTTPException(status.HTTP_404_NOT_FOUND,
                            f"no dispatch {dispatch_id!r} (a new one shows up once control has read it)")
    now = current or {}
    values: dict[str, object] = {
        "dispatch_id": dispatch_id, "state": now.get("state") or (points[-1].state if points else "UNKNOWN"),
        "node_id": now.get("node_id") or None, "strategy": now.get("strategy") or None,
        "requested_by": now.get("requested_by") or None, "start": from_ms(now.get("start")),
        "end": from_ms(now.get("end")), "event_time": from_ms(now.get("event_time")),
        "reason": now.get("reason") or None, "history": points}
    values.update({k: float(now[k]) if now.get(k) else None for k in _STATUS_FLOATS})
    values.update({k: int(float(now[k])) if now.get(k) else None for k in _STATUS_COUNTS})
    return DispatchStatus.model_validate(values)


@router.delete("/{dispatch_id}", status_code=status.HTTP_202_ACCEPTED, summary="Cancel a dispatch")
def cancel_dispatch(dispatch_id: DispatchId, principal: Dispatcher,
                    resources: ResourcesDep) -> DispatchAccepted:
    """Asks control to stop it; its sites return to their own plans (404 for an unknown dispatch)."""
    try:
        dispatch.cancel(resources.settings, dispatch_id, principal.subject, resources.redis,
                        resources.producer)
    except RuntimeError as exc:  # the broker did not take the request
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from None
    return DispatchAccepted(dispatch_id=dispatch_id, status_url=f"/v1/dispatch/{dispatch_id}")
