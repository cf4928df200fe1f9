"""Plan a node's peak day from what the platform knows, record it, and send it to control.

``plan_node`` reads the node's latest load forecast (``forecast_points``, written
by ``vpp forecast node``), the error view (``forecast_node_errors``, for the
worse-than-naive flag) and the node's live aggregate in Redis (``node:{id}``),
plans with :func:`peak.day.plan_day` and records the ``peak_events`` row.
``record_day`` completes the row from the day's measurements in ``node_minute``.
``run_plan`` turns the plan's schedule into dispatches on ``dispatch.requests``
through :mod:`core.dispatch` (checked like any other request), once (``vpp
peak run --once``); the intraday executor that follows the measured net load
and re-plans is :mod:`vpp.peak_intraday` (``vpp peak run``).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import numpy as np
import redis

from core import dispatch, keys
from core.config import Settings
from core.history import HistoryStore
from core.live import text
from core.rows import PeakEvent
from peak.day import NodePlan, plan_day, plan_id_for
from peak.events import measured_event, planned_event
from peak.planner import NoEvent, Plan
from peak.schedule import dispatch_specs

QUARTER_HOURS = 96


def plan_node(store: HistoryStore, client: redis.Redis, node_id: str, day: date,
              now: datetime | None = None) -> NodePlan:
    """Plan ``node_id``'s ``day`` and record it in ``peak_events``."""
    latest = store.latest_forecast("node_load", node_id)
    errors = store.forecast_node_errors(node_id) if latest else []
    aggregate = {text(k): text(v) for k, v in client.hgetall(keys.node(node_id)).items()}
    planned = plan_day(node_id, day, latest, errors, aggregate, now or datetime.now(UTC))
    store.insert_peak_events([planned.event])
    return planned


def record_day(store: HistoryStore, node_id: str, day: date, now: datetime | None = None) -> PeakEvent:
    """Complete the day's ``peak_events`` row from ``node_minute`` (net load = grid import) and record it.

    A day never planned is recorded as ``no_event`` with what was measured, so its
    peaks are still on record; quarter-hours without minute rows are left out and noted.
    """
    now = now or datetime.now(UTC)
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    end = start + timedelta(days=1)
    rows = store.peak_events(node_id, start, end)
    planned = rows[-1] if rows else planned_event(node_id, start, plan_id_for(node_id, day),
                                                   NoEvent("no plan was recorded for the day"), now)
    grid_t, grid = store.node_quarter_hours(node_id, "grid_kw", start, end)
    battery_t, battery = store.node_quarter_hours(node_id, "battery_kw", start, end)
    if not grid_t or grid_t != battery_t:
        raise ValueError(f"no complete measurements of {node_id!r} on {day.isoformat()} in node_minute")
    event = measured_event(planned, np.array(grid), np.array(battery), 0.25, now)
    if len(grid_t) < QUARTER_HOURS:
        event = replace(event, note=f"{event.note}; measured {len(grid_t)} of {QUARTER_HOURS} quarter-hours"
                        .lstrip("; "))
    store.insert_peak_events([event])
    return event


def run_plan(settings: Settings, client: redis.Redis, planned: NodePlan,
             now: datetime | None = None) -> list[str]:
    """Send the rest of the plan's schedule as dispatches of the node; their ids (none without a plan)."""
    if not isinstance(planned.plan, Plan):
        return []
    now = now or datetime.now(UTC)
    return [dispatch.submit(settings, spec, "peak", client)
            for spec in dispatch_specs(planned.plan, planned.node_id, planned.plan_id, now)]
