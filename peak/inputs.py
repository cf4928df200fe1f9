"""The planner's inputs from what the platform stores: a node's live aggregate and its forecast points.

Pure: the callers (``vpp peak``, the API) read Redis and the history, these
functions only reshape. A forecast that does not cover every interval of the day
is no forecast (the planner then says so and makes no event); the standard
deviation comes back from the stored band (q90 is the Gaussian 90% quantile).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from statistics import NormalDist

import numpy as np

from core.rows import ForecastPoint
from peak.fleet import FleetCapacity
from peak.planner import LoadForecast

Z90 = NormalDist().inv_cdf(0.9)


def fleet_from_aggregate(fields: Mapping[str, str | float]) -> FleetCapacity:
    """A node's fleet from its live aggregate (the ``node:{id}`` hash the telemetry dataflow keeps).

    The estimates over every member site (offline ones at their last known values), with the
    coverage: :func:`peak.fleet.committed` then counts only the reporting share when coverage is
    below 90% (the measured values alone would be derated twice), and the whole estimate above it
    (a few silent sites are likely back by the time the plan runs).
    """
    def number(name: str) -> float:
        if name not in fields:
            raise KeyError(f"the node aggregate has no {name!r}")
        return float(fields[name])

    return FleetCapacity(number("est_available_discharge_kw"), number("est_available_charge_kw"),
                         number("est_energy_available_kwh"), number("est_charge_headroom_kwh"),
                         number("coverage"))


def forecast_for_day(points: Sequence[ForecastPoint], day_start: datetime, step: timedelta, intervals: int,
                     worse_than_naive: bool = False) -> LoadForecast | None:
    """The day's ``intervals`` targets from ``day_start``, or None when any is missing."""
    by_time = {p.target_time: p for p in points}
    wanted = [day_start + i * step for i in range(intervals)]
    if any(t not in by_time for t in wanted):
        return None
    chosen = [by_time[t] for t in wanted]
    mean = np.array([p.value for p in chosen])
    std = np.maximum(np.array([p.q90 for p in chosen]) - mean, 0.0) / Z90
    return LoadForecast(day_start, step, mean, std, chosen[0].model, worse_than_naive)
