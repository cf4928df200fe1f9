"""The intraday executor: follow the measured load and the threshold, re-plan when the day moves. Pure.

The day-ahead plan is a threshold and a schedule made on a forecast. During the
day the load comes in as it comes, and the fleet may not be what the plan
counted on, so the executor (:class:`Intraday`, fed by ``vpp peak run``) works
on what is measured:

* **Follow.** At each reading of the node (its net load and the fleet's
  battery power, so the load without the fleet is ``net + battery``) the fleet's
  power for the rest of the current interval is one step of the threshold rule
  (:func:`peak.executor.threshold_step`): discharge what the load exceeds the
  threshold by, recharge only into the room under ``min(threshold, highest load
  of the day so far)``. The load it acts on is the higher of the measured load
  and the plan's load for the interval: at an interval's start the reading is
  the last interval's, and the plan knows a step is coming; erring high only
  spends energy the plan set aside for that interval, and recharges less. Power
  is never more than both the plan's committed fleet and the fleet available
  now; energy never more than the committed energy left and what is there.
* **Re-plan** (the LP on the rest of the day, :class:`peak.planner.Planner`)
  when the day has moved beyond :class:`Tolerances`: a new forecast run; the
  measured load (the mean of the interval's readings once ``settle`` into it) away
  from the plan's load for the interval by more than
  ``load_share`` of the plan's peak; the energy the fleet has used since the
  plan away from what the plan used by more than ``energy_share`` of the
  committed capacity; the coverage fallen more than ``coverage_drop`` below
  what the plan saw. The re-plan takes the latest forecast from the current
  interval on, shifted by the measured departure now (the load is assumed to
  stay as far off as it is), the fleet as read, and must give back by the end
  of the day what the day took since the executor began.
* Each interval's power becomes one dispatch (id: the plan id and the interval's
  start, ``HHMM``), created once and replaced when the power moves by at least
  ``resolution_kw``; with ``lead`` the next interval's dispatch is sent that
  long before its window, so the control flow starts it on time.

A re-plan that finds no event (no forecast, nothing left to give) keeps
following the last threshold, so a fleet that spent its energy still recharges
under it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

import numpy as np

from core.rows import PeakEvent
from peak.events import planned_event
from peak.executor import threshold_step
from peak.fleet import FleetCapacity, committed
from peak.inputs import fleet_from_aggregate
from peak.planner import Array, LoadForecast, NoEvent, Plan, Planner


@dataclass(frozen=True, slots=True)
class Tolerances:
    """How far the day may move from what the plan in force assumed before it is planned again."""

    #: Measured load against the plan's load for the interval, as a share of the plan's peak load.
    load_share: float = 0.05
    #: Energy used since the plan against the plan's, as a share of the committed capacity.
    energy_share: float = 0.10
    #: Coverage fallen below the plan's by more than this (absolute, 0.05 = 5 points).
    coverage_drop: float = 0.05
    #: The load is compared (and the forecast shifted) only on readings at least this far into their
    #: interval: the live aggregate lags the node's clock by an emit interval and the pipeline, so the
    #: first readings of an interval still carry the last one's load, and a load that steps between
    #: intervals would otherwise look like a departure at every boundary (and back at the next reading).
    settle: timedelta = timedelta(seconds=60)


@dataclass(frozen=True, slots=True)
class Reading:
    """What the node measures at ``at``: net load (grid import), the fleet's battery power (+ discharge)
    and what the fleet can give (the live aggregate, not derated)."""

    at: datetime
    net_kw: float
    battery_kw: float
    fleet: FleetCapacity

    @property
    def load_kw(self) -> float:
        """The load without the fleet: what the node would draw had the batteries stood still."""
        return self.net_kw + self.battery_kw


def reading_from_aggregate(fields: Mapping[str, str | float], at: datetime) -> Reading:
    """A reading from the node's live aggregate (``node:{id}``); KeyError/ValueError if incomplete.

    The net load and battery power are the reporting sites' (``grid_kw``, ``battery_kw``), what
    ``node_minute`` records and the day is measured by.
    """
    for name in ("grid_kw", "battery_kw"):
        if name not in fields:
            raise KeyError(f"the node aggregate has no {name!r}")
    return Reading(at, float(fields["grid_kw"]), float(fields["battery_kw"]), fleet_from_aggregate(fields))


@dataclass(frozen=True, slots=True)
class Basis:
    """A plan (or why none) and what it was made on: the latest forecast run, the fleet, the load."""

    at: datetime
    first: int  # the day's interval the plan starts at
    plan: Plan | NoEvent
    forecast_run: str
    coverage: float
    energy_kwh: float  # the fleet's energy above the reserves when planned (as read, not derated)
    bias_kw: float  # measured load minus forecast when planned; the plan's load is shifted by it
    reason: str
    #: The energy (committed, at each interval boundary from ``first``) the executor expects to hold
    #: if the load is the plan's: the threshold rule run on the plan's load (empty without a plan).
    expected_kwh: Array = field(default_factory=lambda: np.zeros(0))


@dataclass(frozen=True, slots=True)
class Target:
    """The fleet's power for one interval of the day: a dispatch to send (or replace, ``replace``)."""

    interval: int
    start: datetime
    end: datetime
    target_kw: float
    replace: bool
    decided_kw: float  # the power decided, before rounding to the resolution


@dataclass
class Intraday:
    """One node's day being executed: the plan in force, the re-plans, the power sent per interval."""

    day_start: datetime
    step: timedelta
    intervals: int
    tolerances: Tolerances = field(default_factory=Tolerances)
    resolution_kw: float = 0.1
    lead: timedelta = timedelta(0)
    replans: list[Basis] = field(default_factory=list)
    #: Interval -> (window start, power sent, power decided) of the dispatch sent for it.
    sent: dict[int, tuple[datetime, float, float]] = field(default_factory=dict)
    seen_kw: float = -math.inf  # the highest load without the fleet measured today
    #: Interval -> (sum, count) of the load readings in it (without the fleet), for the day's net peak.
    load_readings: dict[int, tuple[float, int]] = field(default_factory=dict)
    #: The same, of the settled readings only (``Tolerances.settle`` into their interval).
    settled_readings: dict[int, tuple[float, int]] = field(default_factory=dict)
    day_energy_kwh: float | None = None  # the fleet's energy when the executor began
    _planners: dict[int, Planner] = field(default_factory=dict)

    @property
    def step_h(self) -> float:
        return self.step.total_seconds() / 3600

    @property
    def end(self) -> datetime:
        """When the day ends."""
        return self.day_start + self.intervals * self.step

    @property
    def basis(self) -> Basis | None:
        """The latest (re-)plan."""
        return self.replans[-1] if self.replans else None

    @property
    def in_force(self) -> Basis | None:
        """The latest re-plan that found an event: its threshold is the one followed."""
        return next((b for b in reversed(self.replans) if isinstance(b.plan, Plan)), None)

    def index(self, at: datetime) -> int:
        """The day's interval ``at`` falls in (may be outside ``0..intervals-1``)."""
        return math.floor((at - self.day_start) / self.step)

    def observe(self, reading: Reading) -> None:
        """Take a reading in: the day's highest load, and the fleet's energy when the day began."""
        k = self.index(reading.at)
        if 0 <= k < self.intervals:
            self.seen_kw = max(self.seen_kw, reading.load_kw)
            total, count = self.load_readings.get(k, (0.0, 0))
            self.load_readings[k] = (total + reading.load_kw, count + 1)
            if reading.at - (self.day_start + k * self.step) >= self.tolerances.settle:
                total, count = self.settled_readings.get(k, (0.0, 0))
                self.settled_readings[k] = (total + reading.load_kw, count + 1)
        if self.day_energy_kwh is None:
            self.day_energy_kwh = reading.fleet.energy_kwh

    def floor_kw(self, before: int) -> float:
        """The day's net peak so far: the highest net load of an interval before ``before``, as the
        interval's mean load less the power last sent for it.

        Holding the net load under a threshold below it lowers no peak (the day has it already), it
        only spends energy and then takes it back: a re-plan after the peak would otherwise discharge
        to the lower peak of the rest of the day. Interval means, as the day is billed; the power sent
        rather than the measured net, which lags each change of the fleet's power by a few readings
        (a floor raised by every such lag would ratchet), and a fleet falling short of what was sent
        only lowers the floor, which spends energy but never makes a peak.
        """
        nets = [total / count - self.sent.get(k, (self.day_start, 0.0, 0.0))[1]
                for k, (total, count) in self.load_readings.items() if k < before and count]
        return max(nets, default=-math.inf)

    def settled_load_kw(self, at: datetime) -> float | None:
        """The mean load of the settled readings of ``at``'s interval so far (None: none yet)."""
        total, count = self.settled_readings.get(self.index(at), (0.0, 0))
        return total / count if count else None

    def threshold_kw(self, plan: Plan, at: datetime) -> float:
        """The threshold the executor holds at ``at``: the plan's, or the day's net peak so far if higher."""
        return max(plan.threshold_kw, self.floor_kw(self.index(at)))

    def replan_reason(self, reading: Reading, forecast_run: str | None) -> str | None:
        """Why the day must be planned again now, or None (``forecast_run`` None: not read this time)."""
        basis = self.basis
        if basis is None:
            return "the executor began"
        if forecast_run is not None and forecast_run != basis.forecast_run:
            return f"a new forecast run {forecast_run} (was {basis.forecast_run or 'none'})"
        tol = self.tolerances
        if basis.coverage - reading.fleet.coverage > tol.coverage_drop:
            return f"coverage fell from {basis.coverage:.0%} to {reading.fleet.coverage:.0%}"
        plan = basis.plan
        if not isinstance(plan, Plan):
            return None
        k = self.index(reading.at) - basis.first
        if not 0 <= k < len(plan.planning_load_kw):
            return None
        expected = float(plan.planning_load_kw[k])
        scale = float(plan.planning_load_kw.max())
        load = self.settled_load_kw(reading.at)
        if load is not None and abs(load - expected) > tol.load_share * scale:
            return (f"the load {load:,.1f} kW is {load - expected:+,.1f} kW off the "
                    f"plan's {expected:,.1f} kW (tolerance {tol.load_share:.0%} of {scale:,.1f})")
        used = basis.energy_kwh - reading.fleet.energy_kwh
        planned = self._planned_use(basis, plan, reading.at)
        if abs(used - planned) > tol.energy_share * plan.fleet.capacity_kwh:
            return (f"the fleet used {used:,.1f} kWh since the plan, the plan {planned:,.1f} kWh (tolerance "
                    f"{tol.energy_share:.0%} of {plan.fleet.capacity_kwh:,.1f} kWh)")
        return None

    def _planned_use(self, basis: Basis, plan: Plan, at: datetime) -> float:
        """Energy the executor expects to take from storage between the plan and ``at`` (linear within an
        interval): not the LP's schedule, which may recharge where the rule would not (ahead of the
        day's highest load), but the rule's own on the plan's load."""
        def stored(when: datetime) -> float:
            position = (when - (self.day_start + basis.first * self.step)) / self.step
            position = min(max(position, 0.0), float(len(plan.planning_load_kw)))
            k = min(int(position), len(plan.planning_load_kw) - 1)
            e = basis.expected_kwh
            return float(e[k] + (e[k + 1] - e[k]) * (position - k))

        return stored(basis.at) - stored(at)

    def replan(self, reading: Reading, forecast: LoadForecast | None, forecast_run: str,
               reason: str) -> Basis:
        """Plan the rest of the day (from the current interval) on ``forecast`` and the fleet as read
        (:meth:`observe` the reading first)."""
        first = min(max(self.index(reading.at), 0), self.intervals - 1)
        bias = 0.0
        plan: Plan | NoEvent
        if forecast is None:
            plan = NoEvent("no load forecast for the day")
        elif len(forecast.mean_kw) != self.intervals:
            plan = NoEvent(f"the forecast has {len(forecast.mean_kw)} intervals, the day {self.intervals}")
        else:
            settled = self.settled_load_kw(reading.at)
            bias = (reading.load_kw if settled is None else settled) - float(forecast.mean_kw[first])
            rest = replace(forecast, start=self.day_start + first * self.step,
                           mean_kw=np.asarray(forecast.mean_kw[first:], dtype=np.float64) + bias,
                           std_kw=np.asarray(forecast.std_kw[first:], dtype=np.float64))
            plan = self._plan_rest(rest, reading.fleet)
        expected = self._expected(plan, reading.at) if isinstance(plan, Plan) else np.zeros(0)
        basis = Basis(reading.at, first, plan, forecast_run, reading.fleet.coverage, reading.fleet.energy_kwh,
                      bias, reason, expected)
        self.replans.append(basis)
        return basis

    def _expected(self, plan: Plan, at: datetime) -> Array:
        """The threshold rule on the plan's load: the committed energy at each interval boundary."""
        energy = np.empty(len(plan.planning_load_kw) + 1)
        energy[0] = e = float(plan.energy_kwh[0])
        seen, threshold = self.seen_kw, self.threshold_kw(plan, at)
        for t, load in enumerate(plan.planning_load_kw):
            seen = max(seen, float(load))
            _, e = threshold_step(float(load), threshold, plan.fleet, self.step_h, e, seen)
            energy[t + 1] = e
        return energy

    def _plan_rest(self, rest: LoadForecast, fleet: FleetCapacity) -> Plan | NoEvent:
        """The LP on the rest of the day; it gives back what the day took so far, as far as it can."""
        n = len(rest.mean_kw)
        planner = self._planners.get(n)
        if planner is None:
            planner = self._planners[n] = Planner(n, self.step_h)
        counted = committed(fleet, rest.worse_than_naive)
        owed = max((self.day_energy_kwh or 0.0) - fleet.energy_kwh, 0.0)
        owed = min(owed, max(counted.charge_kw, 0.0) * counted.charge_efficiency * n * self.step_h,
                   max(counted.headroom_kwh, 0.0))
        plan = planner.plan(rest, fleet, counted.energy_kwh + owed if owed > 0 else None)
        if isinstance(plan, Plan) and owed > 0:
            plan = replace(plan, notes=(*plan.notes, f"gives back the {owed:,.1f} kWh the day took so far"))
        return plan

    def committed_now(self, reading: Reading) -> FleetCapacity | None:
        """What the executor may use now: the plan's committed fleet, within what is there (None: no plan)."""
        basis = self.in_force
        if basis is None:
            return None
        plan = basis.plan
        assert isinstance(plan, Plan)
        live, planned = reading.fleet, plan.fleet
        used = basis.energy_kwh - live.energy_kwh
        energy = min(max(float(plan.energy_kwh[0]) - used, 0.0), max(live.energy_kwh, 0.0),
                     planned.capacity_kwh)
        headroom = min(planned.capacity_kwh - energy, max(live.headroom_kwh, 0.0))
        return replace(planned, discharge_kw=max(min(planned.discharge_kw, live.discharge_kw), 0.0),
                       charge_kw=max(min(planned.charge_kw, live.charge_kw), 0.0),
                       energy_kwh=energy, headroom_kwh=max(headroom, 0.0), coverage=live.coverage)

    def decide(self, reading: Reading) -> list[Target]:
        """The dispatches to send or replace after ``reading``: the current interval's, and the next's
        when its window is within ``lead``. Call :meth:`observe` (or :meth:`replan`) first."""
        basis, fleet = self.in_force, self.committed_now(reading)
        k = self.index(reading.at)
        if basis is None or fleet is None or not 0 <= k < self.intervals:
            return []
        plan = basis.plan
        assert isinstance(plan, Plan)
        out: list[Target] = []
        energy = fleet.energy_kwh
        seen = max(self.seen_kw, reading.load_kw)
        for i in (k, k + 1):
            start, end = self.day_start + i * self.step, self.day_start + (i + 1) * self.step
            if i >= self.intervals or (i > k and start - self.lead > reading.at):
                break
            begin = max(start, reading.at)
            hours = (end - begin).total_seconds() / 3600
            if hours <= 0:
                continue
            j = i - basis.first
            expected = float(plan.planning_load_kw[j]) if 0 <= j < len(plan.planning_load_kw) else -math.inf
            load = max(reading.load_kw, expected)
            power, energy = threshold_step(load, self.threshold_kw(plan, reading.at), fleet, hours, energy,
                                           max(seen, load))
            target = self._changed(i, begin, end, power)
            if target is not None:
                out.append(target)
        return out

    def _changed(self, interval: int, begin: datetime, end: datetime, power: float) -> Target | None:
        """A target to send when ``power`` moved a resolution step or more from what was sent (so a
        reading jittering about a step's edge sends nothing)."""
        # Towards zero: never more power or energy than decided, never a recharge above the cap.
        rounded = math.trunc(power / self.resolution_kw + math.copysign(1e-9, power)) * self.resolution_kw
        sent = self.sent.get(interval)
        if sent is None:
            if abs(rounded) < self.resolution_kw / 2:
                return None
            return Target(interval, begin, end, rounded, False, power)
        if abs(power - sent[2]) < self.resolution_kw or rounded == sent[1]:
            return None
        return Target(interval, sent[0], end, rounded, True, power)

    def dispatch_id(self, plan_id: str, target: Target) -> str:
        """The dispatch of one interval: the plan id and the interval's start (``HHMM``, UTC), as
        :func:`peak.schedule.dispatch_specs` names them."""
        return f"{plan_id}-{self.day_start + target.interval * self.step:%H%M}"

    def sent_ok(self, target: Target) -> None:
        """Note that ``target`` reached ``dispatch.requests``."""
        self.sent[target.interval] = (target.start, target.target_kw, target.decided_kw)


def replanned_event(node_id: str, day_start: datetime, plan_id: str, replans: Sequence[Basis], seen_kw: float,
                    recorded_at: datetime) -> PeakEvent:
    """The day's ``peak_events`` row after a re-plan: the threshold in force and every re-plan in the note.

    The forecast peak is the day's as known now: the higher of the load measured so far and the
    re-planned forecast's peak. Without any plan that found an event, the latest reason.
    """
    in_force = next((b for b in reversed(replans) if isinstance(b.plan, Plan)), None)
    latest = replans[-1]
    event = planned_event(node_id, day_start, plan_id, (in_force or latest).plan, recorded_at)
    if in_force is not None:
        plan = in_force.plan
        assert isinstance(plan, Plan)
        event = replace(event, forecast_peak_kw=max(plan.forecast_peak_kw, seen_kw))
    log = "; ".join(_describe(b) for b in replans)
    return replace(event, note=f"{event.note}; {log}".lstrip("; "))


def _describe(basis: Basis) -> str:
    plan = basis.plan
    outcome = (f"threshold {plan.threshold_kw:,.1f} kW" if isinstance(plan, Plan)
               else f"no event ({plan.reason})")
    return f"planned at {basis.at:%H:%M} ({basis.reason}): {outcome}"
