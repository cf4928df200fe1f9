"""Plan a node's peak day from what the platform knows, record it, and send it to control.

``plan_node`` reads the node's latest load forecast (``forecast_points``, written
by ``vpp forecast node``), the error view (``forecast_node_errors``, for the
worse-than-naive flag) and the node's live aggregate in Redis (``node:{id}``),
plans with :func:`peak.day.plan_day` and records the ``peak_events`` row.
``run_plan`` turns the plan's schedule into dispatches on ``dispatch.requests``
through :mod:`core.dispatch` (checked like any other request). During the day
the control dataflow corrects each dispatch from the measured node power; an
executor that follows the measured net load and re-plans is not built yet
(docs/architecture.md).
"""

from __future__ import annotations

from datetime import UTC, date, datetime

import redis

from core import dispatch, keys
from core.config import Settings
from core.history import HistoryStore
from core.live import text
from peak.day import NodePlan, plan_day
from peak.planner import Plan
from peak.schedule import dispatch_specs


def plan_node(store: HistoryStore, client: redis.Redis, node_id: str, day: date,
              now: datetime | None = None) -> NodePlan:
    """Plan ``node_id``'s ``day`` and record it in ``peak_events``."""
    latest = store.latest_forecast("node_load", node_id)
    errors = store.forecast_node_errors(node_id) if latest else []
    aggregate = {text(k): text(v) for k, v in client.hgetall(keys.node(node_id)).items()}
    planned = plan_day(node_id, day, latest, errors, aggregate, now or datetime.now(UTC))
    store.insert_peak_events([planned.event])
    return planned


def run_plan(settings: Settings, client: redis.Redis, planned: NodePlan,
             now: datetime | None = None) -> list[str]:
    """Send the rest of the plan's schedule as dispatches of the node; their ids (none without a plan)."""
    if not isinstance(planned.plan, Plan):
        return []
    now = now or datetime.now(UTC)
    return [dispatch.submit(settings, spec, "peak", client)
            for spec in dispatch_specs(planned.plan, planned.node_id, planned.plan_id, now)]
