"""A recorded feeder day spread over simulated sites: what each site's house draws and its PV makes.

The closed-loop replay (``bench/peak_loop.py``) drives the fleet simulator with
real load shapes. Each site replays a SimBench household profile and, if it has
panels, a SimBench PV profile; the households are scaled interval by interval so
that the sites' summed *net* load (load minus PV) is exactly the recorded feeder
day::

    load_i[t] = (feeder[t] + sum_j pv_j[t]) * h_i[t] / sum_j h_j[t]

so the node the sites belong to measures the recorded day when the batteries
stand still, and every site still has its own household's shape. Values are
held for the whole interval (SimBench values are interval means, so a
quarter-hour average of the replay is the recorded value).

:func:`scale_to_fleet` sizes the recorded day (per unit) against the fleet: the
fleet's discharge power is ``fleet_share`` of the day's peak, as in the
plan-level replay (10% of the peak).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

from peak.planner import Array


@dataclass(frozen=True, slots=True)
class SiteProfile:
    """One site's load and PV (kW) from ``start`` every ``step``; the battery idles unless commanded.

    Satisfies :class:`edge_gateway.simulator.SiteProfile`. Before ``start`` the first
    value holds, after the last interval the last one.
    """

    start: datetime
    step: timedelta
    load: Array
    solar: Array
    self_consumption: bool = False

    def _index(self, now: datetime) -> int:
        return min(max(int((now - self.start) / self.step), 0), len(self.load) - 1)

    def load_kw(self, now: datetime) -> float:
        """The household load at ``now``."""
        return float(self.load[self._index(now)])

    def solar_kw(self, now: datetime) -> float:
        """The PV output at ``now``."""
        return float(self.solar[self._index(now)])


@dataclass(frozen=True, slots=True)
class FeederDay:
    """A recorded day of a feeder (net kW per interval) and the site profiles that add up to it."""

    start: datetime
    step: timedelta
    net_kw: Array
    sites: Mapping[str, SiteProfile]

    def index(self, at: datetime) -> int:
        """The interval ``at`` falls in (may be outside the day)."""
        return int((at - self.start) // self.step)


def scale_to_fleet(day_pu: Array, fleet_kw: float, fleet_share: float = 0.1) -> Array:
    """The per-unit day in kW, scaled so that ``fleet_kw`` is ``fleet_share`` of its peak."""
    day = np.asarray(day_pu, dtype=np.float64)
    peak = float(day.max())
    if not (peak > 0 and fleet_kw > 0 and 0 < fleet_share <= 1):
        raise ValueError(f"cannot scale a day with peak {peak} to a fleet of {fleet_kw} kW at {fleet_share}")
    out: Array = day * (fleet_kw / fleet_share / peak)
    return out


def split_feeder(start: datetime, step: timedelta, feeder_kw: Array, households: Sequence[Array],
                 solar_pu: Array | None, sites: Sequence[tuple[str, float]]) -> FeederDay:
    """Spread ``feeder_kw`` over ``sites`` ((site id, PV kWp), in order).

    Site ``i`` gets household profile ``households[i % len(households)]`` (any unit: only
    its shape counts) and PV ``kWp * solar_pu`` (none if ``solar_pu`` is None). Raises
    ValueError on mismatched lengths or a household sum that is not positive everywhere.
    """
    feeder = np.asarray(feeder_kw, dtype=np.float64)
    n = len(feeder)
    if not sites or not households:
        raise ValueError("a feeder day needs at least one site and one household profile")
    shapes = [np.asarray(h, dtype=np.float64) for h in households]
    if any(len(h) != n for h in shapes) or (solar_pu is not None and len(solar_pu) != n):
        raise ValueError(f"every profile must have the feeder's {n} intervals")
    chosen = np.array([shapes[i % len(shapes)] for i in range(len(sites))])
    total = chosen.sum(axis=0)
    if not (np.isfinite(total).all() and (total > 0).all()):
        raise ValueError("the household profiles must add up to a positive load in every interval")
    pv_unit = np.zeros(n) if solar_pu is None else np.clip(np.asarray(solar_pu, dtype=np.float64), 0.0, None)
    pv = np.array([kwp * pv_unit for _, kwp in sites])
    loads = (feeder + pv.sum(axis=0)) * chosen / total
    profiles = {site_id: SiteProfile(start, step, loads[i], pv[i]) for i, (site_id, _) in enumerate(sites)}
    return FeederDay(start, step, feeder, profiles)
