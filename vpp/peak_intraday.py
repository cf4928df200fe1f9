"""``vpp peak run``: execute a node's day on the stack, reading by reading (the loop around peak.intraday).

:class:`DayExecutor` is the I/O around :class:`peak.intraday.Intraday`, which
decides. Each :meth:`~DayExecutor.tick` reads the node's live aggregate
(``node:{id}`` in Redis: net load, battery power, the fleet's availability and
coverage), reads the node's latest load forecast run once per interval (a new
run is a reason to re-plan), re-plans when the pure core says so and records
the day's ``peak_events`` row again with the threshold in force and every
re-plan with its reason in the note (``GET /v1/peak/plans`` shows it), then
sends each interval's power as a dispatch on ``dispatch.requests`` through
:mod:`core.dispatch`: created once (id: plan id + ``HHMM``), replaced when the
power moves. A replace waits until the control dataflow has reported the
dispatch; a request the checks refuse is logged and the day goes on. After the
day (and the telemetry flow's lateness) :meth:`~DayExecutor.run` records it
from ``node_minute`` (``record_day``, as ``vpp peak record``).

Time is the node's: the newer of the wall clock and the aggregate's event time,
so a simulated fleet on a faster clock is executed in its own time (a test or
bench passes its clock).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import redis
from confluent_kafka import Producer

from core import dispatch, kafka, keys
from core.config import Settings
from core.dispatch_spec import DispatchRejectedError, DispatchSpec
from core.history import HistoryStore
from core.live import text
from core.rows import PeakEvent
from forecast.quality import worse_than_naive
from peak.day import plan_id_for
from peak.inputs import forecast_for_day
from peak.intraday import Intraday, Reading, Target, Tolerances, reading_from_aggregate, replanned_event
from peak.planner import LoadForecast, Plan
from schemas.times import from_epoch_ms
from vpp.peak_service import QUARTER_HOURS, record_day

STEP = timedelta(minutes=15)
#: The node's latest load forecast: (run id, the day's forecast or None if it does not cover the day).
ForecastSource = Callable[[], tuple[str, LoadForecast | None] | None]


def stored_forecast(store: HistoryStore, node_id: str, day_start: datetime) -> ForecastSource:
    """The node's latest ``node_load`` run from the history (``vpp forecast node`` writes it)."""
    def read() -> tuple[str, LoadForecast | None] | None:
        latest = store.latest_forecast("node_load", node_id)
        if latest is None:
            return None
        run, points = latest
        worse = worse_than_naive(store.forecast_node_errors(node_id), "node_load", run.model) is True
        return run.run_id, forecast_for_day(points, day_start, STEP, QUARTER_HOURS, worse)
    return read


@dataclass
class DayExecutor:
    """One node's day on the running stack."""

    settings: Settings
    client: redis.Redis
    store: HistoryStore
    node_id: str
    day: date
    forecast: ForecastSource
    #: The node's time; default the newer of the wall clock and the aggregate's event time.
    clock: Callable[[], datetime] | None = None
    tolerances: Tolerances = field(default_factory=Tolerances)
    #: Send an interval's dispatch this long before its window (the control flow starts it on time).
    lead: timedelta = timedelta(seconds=30)
    resolution_kw: float = 0.1
    log: Callable[[str], None] = lambda _: None
    producer: Producer | None = None
    intraday: Intraday = field(init=False)
    plan_id: str = field(init=False)
    #: Every dispatch id sent, in order.
    dispatched: list[str] = field(init=False, default_factory=list)
    _forecast_read: tuple[int, tuple[str, LoadForecast | None] | None] | None = field(
        init=False, default=None)
    _event_ms: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        day_start = datetime(self.day.year, self.day.month, self.day.day, tzinfo=UTC)
        self.intraday = Intraday(day_start, STEP, QUARTER_HOURS, self.tolerances, self.resolution_kw,
                                 self.lead)
        self.plan_id = plan_id_for(self.node_id, self.day)
        self.producer = self.producer or Producer(kafka.client_config(self.settings))

    def now(self) -> datetime:
        """The node's time now."""
        if self.clock is not None:
            return self.clock()
        return max(datetime.now(UTC), from_epoch_ms(self._event_ms))

    def tick(self) -> Reading | None:
        """Read the node once, re-plan if the day moved, send what changed; the reading (None: none)."""
        fields = {text(k): text(v) for k, v in self.client.hgetall(keys.node(self.node_id)).items()}
        if "event_time" in fields:
            self._event_ms = int(float(fields["event_time"]))
        at = self.now()
        try:
            reading = reading_from_aggregate(fields, at)
        except (KeyError, ValueError) as exc:
            self.log(f"{at:%H:%M:%S} no usable live aggregate of {self.node_id}: {exc}")
            return None
        day = self.intraday
        day.observe(reading)
        if not 0 <= day.index(at) < day.intervals:
            return reading
        latest = self._latest(at)
        reason = day.replan_reason(reading, latest[0] if latest else None)
        if reason is not None:
            self._replan(reading, latest, reason)
        for target in day.decide(reading):
            self._send(target)
        return reading

    def _latest(self, at: datetime) -> tuple[str, LoadForecast | None] | None:
        """The latest forecast run, read again once per interval."""
        k = self.intraday.index(at)
        if self._forecast_read is None or self._forecast_read[0] != k:
            self._forecast_read = (k, self.forecast())
        return self._forecast_read[1]

    def _replan(self, reading: Reading, latest: tuple[str, LoadForecast | None] | None, reason: str) -> None:
        run, forecast = latest if latest is not None else ("", None)
        basis = self.intraday.replan(reading, forecast, run, reason)
        plan = basis.plan
        outcome = (f"threshold {plan.threshold_kw:,.1f} kW, forecast peak {plan.forecast_peak_kw:,.1f} kW"
                   if isinstance(plan, Plan) else f"no event: {plan.reason}")
        self.log(f"{reading.at:%H:%M:%S} planned ({reason}): {outcome}")
        self.store.insert_peak_events([replanned_event(
            self.node_id, self.intraday.day_start, self.plan_id, self.intraday.replans, self.intraday.seen_kw,
            self.now())])

    def _send(self, target: Target) -> None:
        ident = self.intraday.dispatch_id(self.plan_id, target)
        known = dispatch.read_status(self.client, ident) is not None
        if target.replace and not known:
            return  # created, not reported by the control flow yet: sent again at the next reading
        spec = DispatchSpec(target.target_kw, target.start, target.end, node_id=self.node_id,
                            dispatch_id=ident)
        try:
            dispatch.submit(self.settings, spec, "peak", self.client, self.producer, replace=known)
        except (DispatchRejectedError, RuntimeError) as exc:
            self.log(f"{self.now():%H:%M:%S} {ident} not sent: {exc}")
            return
        self.intraday.sent_ok(target)
        if ident not in self.dispatched:
            self.dispatched.append(ident)
        self.log(f"{self.now():%H:%M:%S} {'replaced' if known else 'sent'} {ident}: "
                 f"{target.target_kw:+,.1f} kW until {target.end:%H:%M}")

    def run(self, poll_s: float = 5.0, stop: Callable[[], bool] = lambda: False,
            record_timeout_s: float = 120.0) -> PeakEvent | None:
        """Tick every ``poll_s`` wall seconds to the end of the day, then record it (None if stopped)."""
        settle = timedelta(seconds=self.settings.allowed_lateness_s + 60)
        if self.now() >= self.intraday.end + settle:
            raise ValueError(f"{self.day.isoformat()} is over: record it with `vpp peak record "
                             f"{self.node_id} --day {self.day}`")
        while self.now() < self.intraday.end + settle:
            if stop():
                return None
            self.tick()
            time.sleep(poll_s)
        return self.record(record_timeout_s)

    def record(self, timeout_s: float = 120.0) -> PeakEvent | None:
        """``record_day`` once ``node_minute`` has the day's last quarter-hour (or after ``timeout_s``)."""
        last = self.intraday.end - STEP
        deadline = time.monotonic() + timeout_s
        while not self.store.node_quarter_hours(self.node_id, "grid_kw", last, self.intraday.end)[0]:
            if time.monotonic() > deadline:
                break
            time.sleep(1.0)
        try:
            event = record_day(self.store, self.node_id, self.day, now=self.now())
        except ValueError as exc:
            self.log(f"the day could not be recorded: {exc}")
            return None
        self.log(f"recorded {event.plan_id}: peak {event.actual_peak_kw:,.1f} kW with the fleet, "
                 f"{event.counterfactual_peak_kw:,.1f} kW without; "
                 f"{'REBOUND' if event.rebound else 'no rebound'}")
        return event
