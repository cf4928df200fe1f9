"""A site's plans, as sent one after another, flattened into what it had planned per interval.

Sites send a new 24-hour plan every 15 minutes or so, each overlapping the last; to set a plan
against what the site then did, each interval takes the newest accepted plan issued before the
interval ended that covers it (a plan issued during an interval may revise that interval).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from core.rows import SitePlanRow


@dataclass(frozen=True, slots=True)
class PlannedInterval:
    """One interval of one plan: its start, length, planned power (kW, + = discharge) and plan."""

    interval_start: datetime
    interval_minutes: int
    power_kw: float
    plan_id: str
    issued_at: datetime


def planned_intervals(plans: Iterable[SitePlanRow], start: datetime, end: datetime) -> list[PlannedInterval]:
    """For every interval starting in [start, end) some plan covers: the newest plan issued before its end."""
    chosen: dict[datetime, PlannedInterval] = {}
    for plan in sorted(plans, key=lambda p: (p.issued_at, p.plan_id)):
        step = timedelta(minutes=plan.interval_minutes)
        for i, power in enumerate(plan.power_kw):
            at = plan.start + i * step
            if start <= at < end and plan.issued_at < at + step:
                chosen[at] = PlannedInterval(at, plan.interval_minutes, power, plan.plan_id, plan.issued_at)
    return [chosen[at] for at in sorted(chosen)]
