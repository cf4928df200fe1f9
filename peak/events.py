"""The peak event record: a day's plan as a ``peak_events`` row, then the same row once measured.

A plan is recorded when it is made (``planned``, or ``no_event`` / ``refused``
with the reason), and recorded again as ``completed`` when the day has been
measured: the node's net load (grid import) and the fleet's battery power
(positive: discharge) per interval. The peak without the fleet is not a
forecast but a counterfactual from those measurements, ``net + battery``: what
the node would have drawn had the batteries stood still. The rebound check
compares the two peaks over the whole day, so a recharge that made a new peak
after the event shows up.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

import numpy as np

from core.rows import PeakEvent
from peak.planner import Array, NoEvent, Plan


def planned_event(node_id: str, day: datetime, plan_id: str, plan: Plan | NoEvent,
                  recorded_at: datetime) -> PeakEvent:
    """The row recorded when the day is planned (or found to have no event)."""
    if isinstance(plan, NoEvent):
        status = "refused" if plan.refused else "no_event"
        nan = float("nan")
        return PeakEvent(node_id, day, plan_id, status, nan, nan, nan, nan, 0.0, 0.0, False, plan.reason,
                         recorded_at)
    return PeakEvent(node_id, day, plan_id, "planned", plan.forecast_peak_kw, plan.threshold_kw, float("nan"),
                     float("nan"), 0.0, 0.0, False, "; ".join(plan.notes), recorded_at)


def measured_event(planned: PeakEvent, net_kw: Array, battery_kw: Array, step_h: float,
                   recorded_at: datetime) -> PeakEvent:
    """The planned row completed with the day's measurements (same length, one value per interval)."""
    net, battery = np.asarray(net_kw, dtype=np.float64), np.asarray(battery_kw, dtype=np.float64)
    if net.shape != battery.shape or net.size == 0:
        raise ValueError(f"net load and battery power must be the same non-empty length, got "
                         f"{net.size} and {battery.size}")
    counterfactual = net + battery
    actual_peak, without_peak = float(net.max()), float(counterfactual.max())
    return replace(
        planned, status="completed" if planned.status == "planned" else planned.status,
        actual_peak_kw=actual_peak, counterfactual_peak_kw=without_peak,
        energy_delivered_kwh=float(np.clip(battery, 0, None).sum() * step_h),
        energy_recharged_kwh=float(np.clip(-battery, 0, None).sum() * step_h),
        rebound=actual_peak > without_peak * (1 + 1e-9) + 1e-9, recorded_at=recorded_at)
