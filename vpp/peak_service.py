"""Plan a node's peak day from what the platform knows, record it, and send it to control.

``plan_node`` reads the node's latest load forecast (``forecast_points``, written
by ``vpp forecast node``) and whether it has been worse than the naive
(``forecast_node_errors``), the node's live aggregate in Redis (``node:{id}``),
plans the day (UTC calendar day, the forecast's step) with :class:`peak.planner.Planner`
and records the ``peak_events`` row. ``run_plan`` turns the plan's schedule into
dispatches on ``dispatch.requests`` through :mod:`core.dispatch` (checked like
any other request). Following the measured load during the day and re-planning
is the control dataflow's correction only, for now (see docs/architecture.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import redis

from core import dispatch, keys
from core.config import Settings
from core.history import HistoryStore
from core.live import text
from core.rows import PeakEvent
from peak.events import planned_event
from peak.inputs import fleet_from_aggregate, forecast_for_day, worse_than_naive
from peak.planner import NoEvent, Plan, Planner
from peak.schedule import dispatch_specs

DAY_S = 86_400


@dataclass(frozen=True, slots=True)
class NodePlan:
    """A node's day: the plan (or why none) and the event row recorded for it."""

    node_id: str
    plan_id: str
    plan: Plan | NoEvent
    event: PeakEvent


def plan_id_for(node_id: str, day: date) -> str:
    """One plan id per node and day."""
    return f"peak-{node_id}-{day:%Y%m%d}"


def plan_node(store: HistoryStore, client: redis.Redis, node_id: str, day: date,
              now: datetime | None = None) -> NodePlan:
    """Plan ``node_id``'s ``day`` and record it in ``peak_events``."""
    now = now or datetime.now(UTC)
    day_start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    plan_id = plan_id_for(node_id, day)
    plan: Plan | NoEvent
    latest = store.latest_forecast("node_load", node_id)
    fields = {text(k): text(v) for k, v in client.hgetall(keys.node(node_id)).items()}
    if latest is None:
        plan = NoEvent(f"no load forecast for node {node_id!r}: run `vpp forecast node {node_id}`")
    elif not fields:
        plan = NoEvent(f"no live aggregate for node {node_id!r} in Redis: is telemetry flowing?")
    else:
        run, points = latest
        step = timedelta(seconds=run.step_s)
        intervals = DAY_S // run.step_s
        worse = worse_than_naive(store.forecast_node_errors(node_id), "node_load", run.model)
        forecast = forecast_for_day(points, day_start, step, intervals, worse)
        if forecast is None:
            plan = NoEvent(f"the latest load forecast of {node_id!r} (run {run.run_id}, from "
                           f"{run.first_target.isoformat()}) does not cover {day.isoformat()}")
        else:
            plan = Planner(intervals, run.step_s / 3600).plan(forecast, fleet_from_aggregate(fields))
    event = planned_event(node_id, day_start, plan_id, plan, now)
    store.insert_peak_events([event])
    return NodePlan(node_id, plan_id, plan, event)


def run_plan(settings: Settings, client: redis.Redis, planned: NodePlan,
             now: datetime | None = None) -> list[str]:
    """Send the rest of the plan's schedule as dispatches of the node; their ids (none without a plan)."""
    if not isinstance(planned.plan, Plan):
        return []
    now = now or datetime.now(UTC)
    return [dispatch.submit(settings, spec, "peak", client)
            for spec in dispatch_specs(planned.plan, planned.node_id, planned.plan_id, now)]
