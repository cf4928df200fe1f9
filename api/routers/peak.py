"""Peak shaving: plan a node's day (``POST``) and read the recorded days (``GET``).

The decision is :func:`peak.day.plan_day`'s, the same the CLI (``vpp peak``)
makes, from the node's latest load forecast, its error view and its live
aggregate; each plan is recorded in ``peak_events``. Planning and sending need
the dispatch scope, reading the read scope, as for dispatches.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status
from pydantic import AfterValidator

from api.deps import Dispatcher, FleetReader, ResourcesDep
from api.models import (
    ID_PATTERN,
    Page,
    PeakEventPublic,
    PeakInterval,
    PeakPlanCreate,
    PeakPlanPublic,
    storable,
)
from core import dispatch, keys
from core.live import text
from peak.day import plan_day
from peak.planner import Plan
from peak.schedule import dispatch_specs

router = APIRouter(prefix="/v1/peak", tags=["peak"])
LAST_DAY = datetime(2106, 1, 1, tzinfo=UTC)


def _known(resources: ResourcesDep, node_id: str) -> None:
    with resources.fleet.use() as fleet:
        if node_id not in fleet.registry.nodes:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"unknown node {node_id!r}")


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


@router.post("/plans", status_code=status.HTTP_201_CREATED, summary="Plan a node's peak day")
def create_plan(body: PeakPlanCreate, principal: Dispatcher, resources: ResourcesDep) -> PeakPlanPublic:
    """Plan the day from the node's forecast and live fleet, record it; optionally send it as dispatches."""
    _known(resources, body.node_id)
    now = datetime.now(UTC)
    day = body.day or now.date() + timedelta(days=1)
    aggregate = {text(k): text(v) for k, v in resources.redis.hgetall(keys.node(body.node_id)).items()}
    with resources.history() as store:
        latest = store.latest_forecast("node_load", body.node_id)
        errors = store.forecast_node_errors(body.node_id) if latest else []
        planned = plan_day(body.node_id, day, latest, errors, aggregate, now)
        store.insert_peak_events([planned.event])
    event, plan = planned.event, planned.plan
    out = PeakPlanPublic(plan_id=planned.plan_id, node_id=body.node_id, day=event.day, status=event.status)
    if not isinstance(plan, Plan):
        out.reason = plan.reason
        return out
    out.threshold_kw, out.forecast_peak_kw = plan.threshold_kw, plan.forecast_peak_kw
    out.energy_delivered_kwh, out.notes = plan.energy_delivered_kwh, list(plan.notes)
    out.intervals = [
        PeakInterval(start=plan.start + i * plan.step, load_kw=float(plan.planning_load_kw[i]),
                     discharge_kw=float(plan.discharge_kw[i]), charge_kw=float(plan.charge_kw[i]),
                     net_kw=float(plan.net_kw[i]), energy_kwh=float(plan.energy_kwh[i + 1]))
        for i in range(len(plan.discharge_kw))
    ]
    if body.dispatch:
        try:
            out.dispatch_ids = [dispatch.submit(resources.settings, spec, principal.subject, resources.redis,
                                                resources.producer)
                                for spec in dispatch_specs(plan, body.node_id, planned.plan_id, now)]
        except RuntimeError as exc:  # the broker did not take the request
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from None
    return out


@router.get("/plans", summary="A node's recorded peak days")
def list_plans(_: FleetReader, resources: ResourcesDep,
               node_id: Annotated[str, Query(pattern=ID_PATTERN, description="The node.")],
               start: Annotated[datetime | None, AfterValidator(storable),
                                Query(description="From (1970-2200); default 30 days ago.")] = None,
               end: Annotated[datetime | None, AfterValidator(storable),
                              Query(description="Before (1970-2200); default in 2 days.")] = None,
               ) -> Page[PeakEventPublic]:
    """The latest record of each day in [start, end): plan, threshold, and once measured, the outcome."""
    _known(resources, node_id)
    now = datetime.now(UTC)
    first = start or now - timedelta(days=30)
    last = min(end or now + timedelta(days=2), LAST_DAY)  # the day column is a DateTime (to 2106)
    with resources.history() as store:
        rows = store.peak_events(node_id, first, last)
    data = []
    for row in rows:
        fields = asdict(row)
        for name in ("forecast_peak_kw", "threshold_kw", "actual_peak_kw", "counterfactual_peak_kw"):
            fields[name] = _finite(fields[name])
        data.append(PeakEventPublic(**fields))
    return Page(data=data, count=len(data))
