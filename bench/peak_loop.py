"""The closed-loop peak replay: one recorded feeder day through the real stack, faster than real time.

A feeder slice (``sites`` simulated sites of one generated feeder) replays a
recorded SimBench day (:mod:`peak.feeder_day`): each site's house follows a
SimBench household profile and its panels a SimBench PV profile, scaled so the
sites' summed net load is the recorded feeder day with the fleet's power at
``fleet_share`` of the day's peak. The batteries stand still unless commanded
(a program's sites keep their energy for its events), so the node measures the
recorded day when the fleet does nothing.

The run is the production path end to end: the fleet talks Kafka (as
``vpp bench control``), the real telemetry dataflow keeps the twin and writes
``node_minute``, the real control dataflow splits and corrects the dispatches.
Once the fleet is live, the day from then to ``to_hour`` (the evening peak and
its recharge) is planned by the peak LP on the recorded day as the forecast and
the fleet read from the live aggregate (``fleet_from_aggregate``, as ``vpp peak
plan``), the plan is recorded and sent as dispatches (``run_plan``, as ``vpp
peak run --once``; with ``LoopScenario.intraday`` the intraday executor of ``vpp
peak run`` executes the slice instead), the simulated clock runs to ``to_hour``, and the day is recorded
from ``node_minute`` (``record_day``, as ``vpp peak record``; the quarter-hours
measured are the slice simulated). The figures compare what the plan
promised with what ``node_minute`` measured:

* planned reduction: ``(forecast peak - threshold) / forecast peak``;
* achieved reduction: ``(counterfactual peak - measured peak) / counterfactual
  peak``, both quarter-hour means of ``node_minute`` (net load ``grid_kw``,
  counterfactual ``grid_kw + battery_kw``);
* ``closed_loop_gap_pct``: planned minus achieved, in percentage points.

The simulated clock runs ahead of the wall clock (the day simulated is today
or tomorrow, UTC, at ``speed`` times real time), so the run's settings widen
``plausible_max_ahead_s`` explicitly (:data:`SIM_MAX_AHEAD_S`), and the
wall-clock cadences that decide how soon the control flow sees the fleet (the
telemetry flow's emit interval, the control tick) are scaled to the clock. What
remains of the gap is the time from a window's start to the fleet following
its commands: a fraction of a second of wall time, which is tens of simulated
seconds of a 15-minute interval at this speed (and under a second at speed 1),
so the figure depends on the speed and is reported with it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import redis

from assets.generator import generate_fleet
from assets.loader import load_fleet
from bench.loop_processes import LoopProcesses
from core import keys
from core.config import Settings
from core.dispatch import read_status
from core.history import HistoryStore, connect
from core.live import text
from core.rows import PeakEvent
from edge_gateway.sim_transports import KafkaTransport
from edge_gateway.simulator import FleetSimulator, SimClock
from forecast.series import DAY
from peak.day import NodePlan, plan_id_for
from peak.events import planned_event
from peak.feeder_day import FeederDay, scale_to_fleet, split_feeder
from peak.inputs import fleet_from_aggregate
from peak.intraday import Tolerances
from peak.planner import LoadForecast, NoEvent, Plan, Planner
from vpp import dataset_series
from vpp.peak_intraday import DayExecutor
from vpp.peak_service import record_day, run_plan

#: The simulated day runs up to a day and a half ahead of the wall clock; anything beyond is refused.
SIM_MAX_AHEAD_S = 2 * 24 * 3600.0
#: Simulated seconds between two aggregates (and twin writes) of the telemetry flow.
SIM_EMIT_S = 5.0
#: Wall seconds between two samples of a site while the fleet warms up.
WARM_SAMPLE_WALL_S = 0.5
HOUSEHOLDS = ("H0-A_pload", "H0-B_pload", "H0-C_pload", "H0-G_pload", "H0-H_pload", "H0-L_pload")
STEP = timedelta(minutes=15)
#: Wall seconds into an interval before the intraday executor compares the load with the plan: the live
#: aggregate lags by wall seconds (emit interval, pipeline, a loaded machine), which are simulated
#: minutes at speed 60 (at 60 simulated seconds the evening's peak interval still read the last one's).
SETTLE_WALL_S = 4.0


@dataclass(frozen=True)
class LoopScenario:
    """The knobs of one closed-loop day; the defaults are the slow test's (``vpp bench peak`` runs the
    whole evening and night: ``bench.peak.LOOP_SCENARIO``)."""

    feeder: str = "lv_urban6_pload"
    day_index: int = 343  # 2016-12-09, a Friday with a clear evening peak (18:15 local)
    solar: str | None = "PV3"
    sites: int = 40
    #: Every site's battery (kWh, kW): a building's shared battery (its load is tens of kW).
    battery: tuple[float, float] = (5.0, 2.5)
    start_soc_pct: float = 90.0
    fleet_share: float = 0.10
    #: Simulated hours of the day the fleet runs (UTC, the recorded day's local hours): the plan covers
    #: from the first quarter-hour after the fleet is live to ``to_hour``, and gives back by then what
    #: it took (the evening peak and its recharge), so the run need not simulate the whole day.
    from_hour: float = 17.0
    to_hour: float = 21.0
    #: The gap grows with the speed (the fleet follows a window's commands a fraction of a wall
    #: second after it starts): at 90 it passed 1 point on a machine loaded ten deep, at 60 it keeps
    #: well inside.
    speed: float = 60.0
    interval_s: float = 15.0
    seed: int = 11
    #: Execute the day with the intraday executor (``vpp peak run``: follow the measured load, re-plan)
    #: instead of sending the plan's schedule once (``vpp peak run --once``).
    intraday: bool = False
    #: The forecast the day is planned on is the recorded day, times this from ``forecast_from_hour``
    #: on (below 1: the evening comes in higher than forecast, and the intraday executor has to notice
    #: and re-plan).
    forecast_scale: float = 1.0
    forecast_from_hour: float = 0.0
    #: Wall seconds between two readings of the intraday executor.
    poll_wall_s: float = 0.25


@dataclass
class LoopResult:
    """What the day planned and what ``node_minute`` measured."""

    node_id: str
    day: date
    plan: Plan
    event: PeakEvent
    dispatch_ids: list[str]
    statuses: dict[str, dict[str, str]] = field(default_factory=dict)
    wall_s: float = 0.0
    #: The intraday executor's plans, first to last, each with its reason (empty when sent once).
    replans: list[tuple[str, float]] = field(default_factory=list)
    #: The first plan (the day-ahead one); with the intraday executor ``plan`` is the one in force at
    #: the day's highest measured load.
    first_plan: Plan | None = None

    @property
    def planned_reduction_pct(self) -> float:
        """The plan's peak reduction against its forecast (the recorded day)."""
        return 100 * (self.plan.forecast_peak_kw - self.plan.threshold_kw) / self.plan.forecast_peak_kw

    @property
    def achieved_reduction_pct(self) -> float:
        """The measured reduction: counterfactual peak against measured peak (quarter-hour means)."""
        cf, actual = self.event.counterfactual_peak_kw, self.event.actual_peak_kw
        return 100 * (cf - actual) / cf

    @property
    def gap_pct(self) -> float:
        """Planned minus achieved reduction, percentage points (positive: the loop fell short)."""
        return self.planned_reduction_pct - self.achieved_reduction_pct

    def figures(self) -> dict[str, float]:
        """The bench figures of this run."""
        return {"closed_loop_gap_pct": abs(self.gap_pct),
                "closed_loop_planned_reduction_pct": self.planned_reduction_pct,
                "closed_loop_achieved_reduction_pct": self.achieved_reduction_pct,
                "closed_loop_rebound": float(self.event.rebound),
                "closed_loop_threshold_kw": self.plan.threshold_kw,
                "closed_loop_fleet_kw": self.plan.fleet.discharge_kw,
                "closed_loop_actual_peak_kw": self.event.actual_peak_kw,
                "closed_loop_counterfactual_peak_kw": self.event.counterfactual_peak_kw,
                "closed_loop_energy_delivered_kwh": self.event.energy_delivered_kwh,
                "closed_loop_energy_recharged_kwh": self.event.energy_recharged_kwh,
                "closed_loop_dispatches": float(len(self.dispatch_ids)),
                "closed_loop_wall_s": self.wall_s}


class ReplayClock(SimClock):
    """A simulated clock that runs ``warm_speed`` times real time until :meth:`go`, then ``speed``.

    The fleet warms up (dataflows starting, the twin filling) on a slower clock, so a slow start
    on a busy machine does not spend the simulated evening before the plan is made; not too slow,
    because the simulator sleeps a whole sample interval of the old pace after the switch. The pace
    is one tuple replaced whole, so the simulator's thread never reads half a switch.
    """

    def __init__(self, start: datetime, speed: float, warm_speed: float) -> None:
        super().__init__(start, speed)
        self._pace = (start, time.monotonic(), min(warm_speed, speed))

    def now(self) -> datetime:
        """The simulated time now."""
        start, origin, speed = self._pace
        return start + timedelta(seconds=(time.monotonic() - origin) * speed)

    def wall_seconds(self, sim_seconds: float) -> float:
        """How long ``sim_seconds`` of simulated time take on the wall clock at the current pace."""
        return sim_seconds / self._pace[2]

    def go(self) -> None:
        """From now on, run ``speed`` times faster than real time."""
        self._pace = (self.now(), time.monotonic(), self.speed)


def sim_day(now: datetime, from_hour: float) -> date:
    """The first UTC day whose ``from_hour`` is still ahead of ``now`` (the fleet must run ahead)."""
    today = now.date()
    start = datetime(today.year, today.month, today.day, tzinfo=UTC) + timedelta(hours=from_hour)
    return today if start > now + timedelta(minutes=1) else today + timedelta(days=1)


def feeder_day(settings: Settings, scenario: LoopScenario, day_start: datetime,
               sites: list[tuple[str, float]], fleet_kw: float) -> FeederDay:
    """The scenario's recorded day spread over ``sites`` (read from the pinned SimBench files)."""
    def day_of(column: str) -> np.ndarray[Any, np.dtype[np.float64]]:
        series = dataset_series.simbench(settings.datasets_dir, column)
        per_day = series.per(DAY)
        return series.values[scenario.day_index * per_day:(scenario.day_index + 1) * per_day]

    net = scale_to_fleet(day_of(scenario.feeder), fleet_kw, scenario.fleet_share)
    solar = day_of(scenario.solar) if scenario.solar else None
    return split_feeder(day_start, STEP, net, [day_of(h) for h in HOUSEHOLDS], solar, sites)


class PeakLoop:
    """The dataflows, the simulated feeder slice and the peak day's plan, on a running stack."""

    def __init__(self, settings: Settings, scenario: LoopScenario) -> None:
        self.scenario = scenario
        sc = scenario
        self.settings = settings.model_copy(update={
            # Control timings in fleet time scale with the clock; the twin is read often enough that a
            # window starts within a few simulated seconds of its time.
            "control_tick_s": 0.05, "control_correction_s": 0.5 * sc.speed,
            # Aggregates and twins reach Redis every emit interval of *wall* time: at the default second
            # the control flow would see the fleet's clock and power a simulated two minutes late.
            "emit_interval_s": SIM_EMIT_S / sc.speed,
            "control_retry_base_s": 0.5 * sc.speed, "control_retry_max_s": 4 * sc.speed,
            "telemetry_interval_s": sc.interval_s, "offline_after_s": 20 * sc.interval_s,
            "delayed_after_s": 4 * sc.interval_s,
            # The simulated day runs ahead of the wall clock: a deliberately skewed device clock.
            "plausible_max_ahead_s": SIM_MAX_AHEAD_S})
        wall = datetime.now(UTC)
        self.day = sim_day(wall, sc.from_hour)
        self.day_start = datetime(self.day.year, self.day.month, self.day.day, tzinfo=UTC)
        generated = generate_fleet(wall - timedelta(hours=1), sc.sites, sc.seed)
        capacity, power = sc.battery
        for site_id, site in list(generated.sites.items()):
            generated.sites[site_id] = replace(site, capacity_kwh=capacity, max_charge_kw=power,
                                               max_discharge_kw=power)
        load_fleet(self.settings, generated, wall - timedelta(hours=1), 1, lambda _: None)
        self.sites = [generated.sites[s] for s in sorted(generated.sites)]
        self.node_id = "feeder-0-0"
        self.fleet_kw = power * len(self.sites)
        self.day_profile = feeder_day(self.settings, sc, self.day_start,
                                      [(s.site_id, s.solar_kwp) for s in self.sites], self.fleet_kw)
        most = max(float(p.load.max()) for p in self.day_profile.sites.values())
        if most > self.settings.plausible_max_site_kw:
            raise ValueError(f"a site would draw {most:.1f} kW, above the plausible "
                             f"{self.settings.plausible_max_site_kw} kW: use more sites or smaller batteries")
        self.clock = ReplayClock(self.day_start + timedelta(hours=sc.from_hour), sc.speed,
                                 sc.interval_s / WARM_SAMPLE_WALL_S)
        self.fleet = FleetSimulator(self.sites, sc.seed, self.clock.start)
        for simulated in self.fleet.sites.values():
            simulated.profile = self.day_profile.sites[simulated.site_id]
            simulated.soc_pct = max(sc.start_soc_pct, simulated.spec.reserve_pct)
        self.redis = redis.Redis.from_url(self.settings.redis)
        self.processes = LoopProcesses(self.settings, lambda name: f"peak-loop-{name}.log",
                                       "peak-loop-control")

    @contextmanager
    def running(self) -> Iterator[PeakLoop]:
        """Both dataflows and the simulated fleet, stopped afterwards."""
        def transport() -> KafkaTransport:
            return KafkaTransport(self.fleet, self.clock, self.settings, self.scenario.interval_s,
                                  self.scenario.seed, group_id="bench-peak-loop-fleet")

        with self.processes.running(transport) as started:
            self._wait_for_fleet(started)
            self.clock.go()
            yield self

    def aggregate(self) -> dict[str, str]:
        """The node's live aggregate (``node:{id}``)."""
        return {text(k): text(v) for k, v in self.redis.hgetall(keys.node(self.node_id)).items()}

    def _wait_for_fleet(self, transport: KafkaTransport, timeout_s: float = 120.0) -> None:
        """Until the simulator has its command partitions and the node's aggregate has the whole fleet.

        The whole fleet: 95% of the sites reporting and 95% of their power available (each site's
        reading joined with its registered rating), so the plan does not count on a fleet half-known.
        """
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.processes.check()
            fields = self.aggregate()
            if (transport.assigned and float(fields.get("coverage", 0.0)) >= 0.95
                    and float(fields.get("est_available_discharge_kw", 0.0)) >= 0.95 * self.fleet_kw):
                return
            time.sleep(0.2)
        raise TimeoutError(f"the fleet did not come online in the twin: {self.aggregate()}\n"
                           f"{self.processes.log_tail()}")

    @property
    def end(self) -> datetime:
        """When the planned slice of the day ends."""
        return self.day_start + timedelta(hours=self.scenario.to_hour)

    def forecast_kw(self) -> np.ndarray[Any, np.dtype[np.float64]]:
        """The day's forecast: the recorded day, scaled from ``forecast_from_hour`` on."""
        out = self.day_profile.net_kw.copy()
        first = int(self.scenario.forecast_from_hour * 3600 / STEP.total_seconds())
        out[first:] *= self.scenario.forecast_scale
        return out

    def plan(self, lead: timedelta = timedelta(minutes=20)) -> NodePlan:
        """From the first quarter-hour ``lead`` ahead to ``to_hour``, planned on the recorded day."""
        first = self.clock.now() + lead
        index = math.ceil((first - self.day_start) / STEP)
        last = self.day_profile.index(self.end)
        if index >= last - 4:
            raise RuntimeError(f"too little of the day is left to plan at {first.isoformat()}")
        load = self.day_profile.net_kw[index:last]
        forecast = LoadForecast(self.day_start + index * STEP, STEP, self.forecast_kw()[index:last],
                                np.zeros(len(load)), "recorded-day")
        fleet = fleet_from_aggregate(self.aggregate())
        plan: Plan | NoEvent = Planner(len(load), STEP.total_seconds() / 3600).plan(forecast, fleet)
        plan_id = plan_id_for(self.node_id, self.day)
        return NodePlan(self.node_id, plan_id, plan,
                        planned_event(self.node_id, self.day_start, plan_id, plan, self.clock.now()))

    def run_day(self) -> LoopResult:
        """Plan, record and send the slice of the day, run it to its end, record it from node_minute."""
        if self.scenario.intraday:
            return self.run_intraday()
        began = time.monotonic()
        planned = self.plan()
        if not isinstance(planned.plan, Plan):
            raise RuntimeError(f"no plan for the day: {planned.plan.reason}")
        client = connect(self.settings)
        try:
            store = HistoryStore(client, self.settings.clickhouse_database)
            store.insert_peak_events([planned.event])
            sent = run_plan(self.settings, self.redis, planned, now=self.clock.now())
            end = self.end
            # Past the end by the telemetry flow's lateness, so the last minutes close.
            until = end + timedelta(seconds=self.settings.allowed_lateness_s + 4 * self.scenario.interval_s)
            while self.clock.now() < until:
                self.processes.check()
                time.sleep(0.5)
            statuses = {d: s for d in sent if (s := read_status(self.redis, d)) is not None}
            event = self._record(store, end)
        finally:
            client.close()
        return LoopResult(self.node_id, self.day, planned.plan, event, sent, statuses,
                          time.monotonic() - began)

    def run_intraday(self) -> LoopResult:
        """Execute the slice with the intraday executor (as ``vpp peak run``) on the simulated clock.

        The executor plans the rest of the day at its first reading, on the recorded day (times
        ``forecast_scale``) as the node's forecast run, follows the measured load, re-plans, and
        sends or replaces each interval's dispatch; the run then records the slice from node_minute.
        """
        began = time.monotonic()
        whole = LoadForecast(self.day_start, STEP, self.forecast_kw(), np.zeros(len(self.day_profile.net_kw)),
                             "recorded-day")
        client = connect(self.settings)
        try:
            store = HistoryStore(client, self.settings.clickhouse_database)
            settle = timedelta(seconds=SETTLE_WALL_S * self.scenario.speed)
            executor = DayExecutor(self.settings, self.redis, store, self.node_id, self.day,
                                   lambda: ("recorded-day", whole), clock=self.clock.now,
                                   lead=timedelta(seconds=60), resolution_kw=0.01 * self.fleet_kw,
                                   tolerances=Tolerances(settle=settle))
            end = self.end
            until = end + timedelta(seconds=self.settings.allowed_lateness_s + 4 * self.scenario.interval_s)
            while self.clock.now() < until:
                self.processes.check()
                if self.clock.now() < end:
                    executor.tick()
                time.sleep(self.scenario.poll_wall_s)
            sent = executor.dispatched
            statuses = {d: s for d in sent if (s := read_status(self.redis, d)) is not None}
            event = self._record(store, end)
        finally:
            client.close()
        day = executor.intraday
        means = {k: total / count for k, (total, count) in day.load_readings.items() if count}
        peak = max(means, key=lambda k: means[k], default=0)
        # The plan held at the day's highest load: the figures compare it with what was measured.
        at_peak = [b.plan for b in day.replans if isinstance(b.plan, Plan) and b.first <= peak]
        if not at_peak:
            raise RuntimeError(f"no plan for the day's peak: {[b.reason for b in day.replans]}")
        plans = [b.plan for b in day.replans if isinstance(b.plan, Plan)]
        replans = [(b.reason, b.plan.threshold_kw if isinstance(b.plan, Plan) else math.nan)
                   for b in executor.intraday.replans]
        return LoopResult(self.node_id, self.day, at_peak[-1], event, sent, statuses,
                          time.monotonic() - began, replans, plans[0])

    def _record(self, store: HistoryStore, end: datetime, timeout_s: float = 60.0) -> PeakEvent:
        """``record_day`` once node_minute has the day's last quarter-hour."""
        last = end - STEP
        deadline = time.monotonic() + timeout_s
        while True:
            times, _ = store.node_quarter_hours(self.node_id, "grid_kw", last, end)
            if times or time.monotonic() > deadline:
                break
            time.sleep(1)
        return record_day(store, self.node_id, self.day, now=self.clock.now())


def run(settings: Settings, scenario: LoopScenario | None = None) -> LoopResult:
    """One closed-loop day on the running stack ``settings`` describes."""
    loop = PeakLoop(settings, scenario or LoopScenario())
    with loop.running():
        return loop.run_day()
