"""A plan's schedule as dispatch requests for the node: one per run of equal power, from now on.

The control dataflow splits each request over the node's sites and corrects it
from the measured node power, so the plan only says how much the node's fleet
gives (positive kW) or takes (negative kW) when. Consecutive intervals whose
power rounds to the same ``resolution_kw`` become one dispatch; intervals
already over are left out, and one in progress starts now. Dispatch ids are the
plan id and the start (``HHMM``, UTC), so sending a plan twice is refused as a
used id rather than doubling the fleet's work.
"""

from __future__ import annotations

from datetime import datetime

from core.dispatch_spec import DispatchSpec
from peak.planner import Plan


def dispatch_specs(plan: Plan, node_id: str, plan_id: str, now: datetime,
                   resolution_kw: float = 0.1) -> list[DispatchSpec]:
    """The dispatches that carry out the rest of ``plan`` (none for intervals that are over)."""
    power = [round((d - c) / resolution_kw) * resolution_kw for d, c in zip(plan.discharge_kw, plan.charge_kw,
                                                                           strict=True)]
    specs: list[DispatchSpec] = []
    i = 0
    while i < len(power):
        j = i
        while j + 1 < len(power) and power[j + 1] == power[i]:
            j += 1
        start, end = plan.start + i * plan.step, plan.start + (j + 1) * plan.step
        if power[i] != 0 and end > now:
            begin = max(start, now)
            specs.append(DispatchSpec(power[i], begin, end, node_id=node_id,
                                      dispatch_id=f"{plan_id}-{start:%H%M}"))
        i = j + 1
    return specs
