"""A node's peak day from what was read for it: the decision, with no I/O.

``vpp peak`` and ``POST /v1/peak/plans`` read the same three things (the node's
latest load forecast run with its points, the forecast error rows, the live
aggregate hash) and hand them here, so both plan and record a day identically.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from core.rows import ForecastPoint, ForecastRunRow, PeakEvent
from forecast.quality import ErrorRow, worse_than_naive
from peak.events import planned_event
from peak.inputs import fleet_from_aggregate, forecast_for_day
from peak.planner import NoEvent, Plan, Planner

DAY_S = 86_400


@dataclass(frozen=True, slots=True)
class NodePlan:
    """A node's day: the plan (or why none) and the event row to record for it."""

    node_id: str
    plan_id: str
    plan: Plan | NoEvent
    event: PeakEvent


def plan_id_for(node_id: str, day: date) -> str:
    """One plan id per node and day."""
    return f"peak-{node_id}-{day:%Y%m%d}"


def plan_day(node_id: str, day: date, latest: tuple[ForecastRunRow, Sequence[ForecastPoint]] | None,
             errors: Sequence[ErrorRow], aggregate: Mapping[str, str], now: datetime) -> NodePlan:
    """Plan ``node_id``'s UTC ``day`` from its latest forecast run and live aggregate."""
    day_start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    plan_id = plan_id_for(node_id, day)
    plan: Plan | NoEvent
    if latest is None:
        plan = NoEvent(f"no load forecast for node {node_id!r}: run `vpp forecast node {node_id}`")
    elif not aggregate:
        plan = NoEvent(f"no live aggregate for node {node_id!r}: is telemetry flowing?")
    else:
        run, points = latest
        step = timedelta(seconds=run.step_s)
        intervals = DAY_S // run.step_s
        worse = worse_than_naive(errors, "node_load", run.model) is True
        forecast = forecast_for_day(points, day_start, step, intervals, worse)
        if forecast is None:
            plan = NoEvent(f"the latest load forecast of {node_id!r} (run {run.run_id}, from "
                           f"{run.first_target.isoformat()}) does not cover {day.isoformat()}")
        else:
            try:
                fleet = fleet_from_aggregate(aggregate)
            except (KeyError, ValueError) as exc:
                plan = NoEvent(f"the live aggregate of {node_id!r} is incomplete: {exc}")
            else:
                plan = Planner(intervals, run.step_s / 3600).plan(forecast, fleet)
    return NodePlan(node_id, plan_id, plan, planned_event(node_id, day_start, plan_id, plan, now))
