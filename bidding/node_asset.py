"""A VPP node as the bidding asset: sized from its live aggregate, its baseline from its aggregate plan.

A node (``node:feeder-0-0`` as an asset id) is a battery made of its member sites. What it can do
comes from the live aggregate the telemetry dataflow keeps (Redis ``node:{id}``): the discharge and
charge power its reporting sites can add now, the energy they hold above their backup reserves and
the room they have up to full. What it will do anyway comes from the aggregate of its sites' own
plans (plans dataflow, Redis ``plan:node:{id}``): the baseline. The bidder offers the market only
the deviation from that baseline, so what the fleet does for its owners is not sold twice.

- Limits are the measured sums of the *reporting* sites (the control dataflow can only command
  online sites). When fewer than ``min_coverage`` (90%) of the member sites report, the limits are
  derated further by the coverage (the fleet is losing contact: sites reporting now may go too), and
  a note says so.
- The baseline is the plan's ``planned_kw`` (the online sites' plans) on the market's grid: the
  time-weighted mean of the plan intervals a market interval overlaps. Intervals the plan does not
  reach are taken as idle (0) and noted; a baseline beyond the node's limits is clipped to them and
  noted. No plan at all: idle, noted.
- A cleared quantity is a deviation; the dispatch the control dataflow gets is the baseline plus it
  (:func:`dispatch_for`), with an id derived from the node and the interval, so a clearing delivered
  twice dispatches once.

Pure: the caller reads the two Redis hashes and passes their fields (strings, as Redis returns them).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

#: Asset ids of VPP nodes start with this; the rest is the node id.
NODE_ASSET_PREFIX = "node:"
#: Below this share of member sites reporting, the node's limits are derated by the coverage.
MIN_COVERAGE = 0.9
#: A live aggregate older than this (seconds) is noted in the sizing.
MAX_AGGREGATE_AGE_S = 300.0
_DISPATCH_ID_CHARS = re.compile(r"[^A-Za-z0-9_.-]")
_MINUTE_MS = 60_000


class NodeUnavailableError(ValueError):
    """The node cannot be sized: no live aggregate, or no member site reporting."""


def node_of(asset_id: str) -> str | None:
    """The node id of a node asset (``node:feeder-0-0`` -> ``feeder-0-0``); None for any other asset."""
    if not asset_id.startswith(NODE_ASSET_PREFIX):
        return None
    return asset_id.removeprefix(NODE_ASSET_PREFIX) or None


def node_asset(node_id: str) -> str:
    """The asset id that bids a node."""
    return f"{NODE_ASSET_PREFIX}{node_id}"


@dataclass(frozen=True, slots=True)
class NodeAvailability:
    """What a node's reporting sites can do now (the live aggregate; kW and kWh as the aggregate states)."""

    node_id: str
    event_ms: int
    coverage: float
    reporting_sites: int
    expected_sites: int
    discharge_kw: float
    charge_kw: float
    energy_kwh: float
    headroom_kwh: float

    @classmethod
    def from_fields(cls, node_id: str, fields: Mapping[str, str]) -> NodeAvailability:
        """From the ``node:{id}`` hash; NodeUnavailableError if it is missing or malformed."""
        if not fields:
            raise NodeUnavailableError(f"no live aggregate for node {node_id!r} (Redis node:{node_id})")
        try:
            made = cls(node_id, int(float(fields["event_time"])), float(fields["coverage"]),
                       int(fields["reporting_sites"]), int(fields["expected_sites"]),
                       float(fields["available_discharge_kw"]), float(fields["available_charge_kw"]),
                       float(fields["energy_available_kwh"]), float(fields["charge_headroom_kwh"]))
        except (KeyError, ValueError) as exc:
            raise NodeUnavailableError(f"the live aggregate of node {node_id!r} is malformed: {exc}") \
                from None
        numbers = (made.coverage, made.discharge_kw, made.charge_kw, made.energy_kwh, made.headroom_kwh)
        if not all(math.isfinite(v) and v >= 0 for v in numbers):
            raise NodeUnavailableError(f"the live aggregate of node {node_id!r} has negative or non-finite "
                                       f"limits: {numbers}")
        return made


@dataclass(frozen=True, slots=True)
class NodeBaseline:
    """A node's aggregate plan: net kW per interval from ``start_ms`` (+ discharge), and plan coverage."""

    start_ms: int
    interval_minutes: int
    planned_kw: tuple[float, ...]
    coverage: tuple[float, ...]

    @classmethod
    def from_fields(cls, fields: Mapping[str, str]) -> NodeBaseline | None:
        """From the ``plan:node:{id}`` hash; None when there is none (or it is unusable)."""
        try:
            planned = tuple(float(v) for v in json.loads(fields["planned_kw"]))
            coverage = tuple(float(v) for v in json.loads(fields.get("coverage", "[]")))
            made = cls(int(float(fields["start_ms"])), int(fields["interval_minutes"]), planned, coverage)
        except (KeyError, ValueError, TypeError):
            return None
        if made.interval_minutes <= 0 or not all(math.isfinite(v) for v in planned):
            return None
        return made

    def on_grid(self, first: datetime, step_s: int, steps: int) -> tuple[np.ndarray, int]:
        """Mean kW in each of ``steps`` intervals of ``step_s`` from ``first``; how many the plan covers.

        An interval counts as covered when the plan spans all of it; parts the plan does not reach
        count as 0 kW in the mean.
        """
        plan_ms = self.interval_minutes * _MINUTE_MS
        plan_end = self.start_ms + len(self.planned_kw) * plan_ms
        first_ms = round(first.timestamp() * 1000)
        step_ms = step_s * 1000
        out = np.zeros(steps)
        covered = 0
        for k in range(steps):
            lo, hi = first_ms + k * step_ms, first_ms + (k + 1) * step_ms
            if lo >= self.start_ms and hi <= plan_end:
                covered += 1
            total = 0.0
            for j in range(max(0, (lo - self.start_ms) // plan_ms), len(self.planned_kw)):
                p_lo = self.start_ms + j * plan_ms
                p_hi = p_lo + plan_ms
                if p_lo >= hi:
                    break
                overlap = min(hi, p_hi) - max(lo, p_lo)
                if overlap > 0:
                    total += self.planned_kw[j] * overlap
            out[k] = total / step_ms
        return out, covered


@dataclass(frozen=True, slots=True)
class NodeSizing:
    """The node as the optimiser sees it: limits (MW, MWh, charge above reserve) and baseline (MW)."""

    power_mw: float
    charge_mw: float
    energy_mwh: float
    soc_mwh: float
    baseline_mw: tuple[float, ...]
    derate: float
    notes: tuple[str, ...]


def size_node(available: NodeAvailability, plan: NodeBaseline | None, interval_start: datetime, step_s: int,
              horizon_steps: int, min_coverage: float = MIN_COVERAGE, digits: int = 4,
              now: datetime | None = None, max_age_s: float = MAX_AGGREGATE_AGE_S) -> NodeSizing:
    """Size a node for a run that bids the interval: limits from the aggregate, baseline from the plan.

    With ``now``, an aggregate older than ``max_age_s`` is noted (the telemetry flow may be behind).
    """
    if available.reporting_sites <= 0:
        raise NodeUnavailableError(f"node {available.node_id!r}: none of its {available.expected_sites} "
                                   "member sites is reporting")
    notes: list[str] = []
    if now is not None:
        age_s = (now.timestamp() * 1000 - available.event_ms) / 1000
        if age_s > max_age_s:
            notes.append(f"live aggregate {age_s:.0f} s old")
    derate = 1.0
    if available.coverage < min_coverage:
        derate = available.coverage
        notes.append(f"coverage {available.coverage:.0%} below {min_coverage:.0%}: limits derated to "
                     f"{derate:.0%} of the reporting sites'")
    power = round(available.discharge_kw * derate / 1000, digits)
    charge = round(available.charge_kw * derate / 1000, digits)
    soc = round(available.energy_kwh * derate / 1000, digits)
    energy = round(soc + available.headroom_kwh * derate / 1000, digits)
    if plan is None:
        baseline = np.zeros(horizon_steps)
        notes.append("no aggregate plan: the fleet's baseline taken as idle")
    else:
        baseline, covered = plan.on_grid(interval_start, step_s, horizon_steps)
        baseline = baseline / 1000
        if covered < horizon_steps:
            notes.append(f"aggregate plan covers {covered} of {horizon_steps} intervals: "
                         "the rest taken as idle")
        clipped = np.clip(baseline, -charge, power)
        if not np.array_equal(clipped, baseline):
            notes.append("baseline beyond the node's limits: clipped to them")
        baseline = clipped
    return NodeSizing(power, charge, energy, soc, tuple(round(float(v), digits) for v in baseline), derate,
                      tuple(notes))


# ---------------------------------------------------------------------------------------- cleared -> dispatch


@dataclass(frozen=True, slots=True)
class NodeDispatch:
    """What the control dataflow is asked for when a node's energy bid clears: the node's total target."""

    dispatch_id: str
    node_id: str
    target_kw: float
    start: datetime
    end: datetime


def dispatch_id(node_id: str, interval_start: datetime) -> str:
    """The dispatch id of a node's cleared interval: the same clearing always gives the same id.

    The market keeps one curve per asset, interval and product (a rebid replaces), so a node has at
    most one energy clearing per interval, whichever run bid it: the id names node and interval.
    """
    when = interval_start.astimezone(UTC).strftime("%Y%m%dT%H%MZ")
    readable = f"bid.{_DISPATCH_ID_CHARS.sub('_', node_id)}.{when}"
    if len(readable) <= 64:
        return readable
    digest = hashlib.sha256(node_id.encode()).hexdigest()[:16]
    return f"bid.{digest}.{when}"


def dispatch_for(node_id: str, interval_start: datetime, step: timedelta, cleared_mw: float,
                 baseline_mw: float) -> NodeDispatch | None:
    """The dispatch for a cleared energy quantity (a deviation from the baseline); None when nothing cleared.

    The control dataflow steers the node's total battery power, so the target is the baseline plus
    the cleared deviation, over the interval.
    """
    if abs(cleared_mw) < 1e-9:
        return None
    target_kw = round((baseline_mw + cleared_mw) * 1000, 3)
    return NodeDispatch(dispatch_id(node_id, interval_start), node_id, target_kw, interval_start,
                        interval_start + step)
