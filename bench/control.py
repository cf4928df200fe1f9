"""``vpp bench control``: the closed loop over the real stack, against the same dispatch open loop.

A simulated fleet (default 1,000 sites, 10% that acknowledge commands and then
ignore them) runs on an accelerated clock and talks to Kafka directly; the real
telemetry dataflow keeps its twin, the real control dataflow dispatches a 2 MW
discharge of the fleet's region. Mid-dispatch 5% of the commanded sites drop
off the network for good (they keep doing what they were told, unheard), and 2%
of sites lose the first delivery of every command (a lossy link), so delivery
has to retry.

Each dispatch runs twice, with correction and open loop (the baseline), one
after the other on the same fleet. Figures:

* ``closed_loop_error_pct`` / ``open_loop_error_pct``: mean |target - measured|
  over the settled part of the window (measured: the control dataflow's own
  dispatch.status), in % of the target;
* ``closed_loop_true_error_pct`` / ``open_loop_true_error_pct``: the same
  against the simulator's ground truth (disconnected sites included);
* ``settle_s``: simulated seconds from the start of the closed-loop window
  until its measured error stays within 2%.

The integration test ``tests/integration/test_control_loop.py`` runs the same
scenario and asserts on it.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import redis

from assets.generator import Site, generate_fleet
from assets.loader import load_fleet
from bench.local import private_stack, tail_consumer
from bench.loop_processes import LoopProcesses
from core.config import Settings
from core.dispatch import read_status, submit
from core.dispatch_spec import DispatchSpec
from core.topics import COMMANDS_ACKS, COMMANDS_SITE
from edge_gateway.sim_transports import KafkaTransport
from edge_gateway.simulator import FaultMix, FleetSimulator, SimClock
from schemas import packaged_codec
from schemas.times import epoch_ms

SETTLED_WITHIN = 0.02
#: How far ahead of the wall clock the dataflows accept the accelerated fleet's event times (a day:
#: far more than (speed - 1) x any run, while still refusing a device dated a year ahead).
SIM_MAX_AHEAD_S = 24 * 3600.0


@dataclass(frozen=True)
class Scenario:
    """The knobs of one run; the defaults are the issue's (1,000 sites, 2 MW, 10% / 5%)."""

    sites: int = 1000
    target_kw: float = 2000.0
    minutes: float = 6.0
    speed: float = 5.0
    noncompliant: float = 0.10
    drop_share: float = 0.05
    drop_after_s: float = 90.0
    settle_after_s: float = 150.0
    lossy_share: float = 0.02
    seed: int = 7


class LossyFleet(FleetSimulator):
    """A fleet behind a lossy link: some sites never hear the first attempt of a command."""

    def __init__(self, *args: Any, lossy: set[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lossy = lossy

    def apply_command(self, command: Mapping[str, Any], now: datetime) -> dict[str, Any] | None:
        if command["site_id"] in self.lossy and command["attempt"] == 1:
            return None
        return super().apply_command(command, now)


@dataclass
class Run:
    """What one dispatch did: its statuses, its commands and acks, and the ground truth."""

    dispatch_id: str
    start_ms: int
    end_ms: int
    target_kw: float
    statuses: list[dict[str, str]] = field(default_factory=list)
    commands: list[dict[str, Any]] = field(default_factory=list)
    acks: list[dict[str, Any]] = field(default_factory=list)
    truth: list[tuple[int, float]] = field(default_factory=list)
    disconnected: set[str] = field(default_factory=set)
    restarted_ms: int | None = None

    def settled(self, after_s: float) -> list[dict[str, str]]:
        since = self.start_ms + after_s * 1000
        return [s for s in self.statuses
                if since <= int(s["event_time"]) < self.end_ms and s["state"] == "ACTIVE"]

    def error_pct(self, after_s: float) -> float:
        errors = [abs(float(s["error_kw"])) for s in self.settled(after_s)]
        return 100 * statistics.fmean(errors) / abs(self.target_kw) if errors else float("nan")

    def true_error_pct(self, after_s: float) -> float:
        since = self.start_ms + after_s * 1000
        errors = [abs(kw - self.target_kw) for at, kw in self.truth if since <= at < self.end_ms]
        return 100 * statistics.fmean(errors) / abs(self.target_kw) if errors else float("nan")

    def settle_s(self) -> float:
        """Simulated seconds until the measured error entered 2% and stayed there."""
        active = [s for s in self.statuses if s["state"] == "ACTIVE"]
        last_out = self.start_ms
        for status in active:
            if abs(float(status["error_kw"])) > SETTLED_WITHIN * abs(self.target_kw):
                last_out = int(status["event_time"])
        return (last_out - self.start_ms) / 1000


class Harness:
    """The real stack's dataflows and a simulated fleet on an accelerated clock, for dispatches."""

    def __init__(self, settings: Settings, scenario: Scenario) -> None:
        self.scenario = scenario
        self.settings = settings.model_copy(update={
            "control_tick_s": 0.2, "control_correction_s": 2.0 * scenario.speed,
            "control_retry_base_s": 0.5 * scenario.speed, "telemetry_interval_s": 1.0,
            # The simulated clock runs ahead of the wall clock by (speed - 1) x the time the harness
            # has run: a deliberately skewed device clock, so the bound on event time is widened.
            "plausible_max_ahead_s": SIM_MAX_AHEAD_S})
        self.clock = SimClock(datetime.now(UTC), scenario.speed)
        self.codec = packaged_codec()
        fleet = generate_fleet(self.clock.start - timedelta(hours=1), scenario.sites, scenario.seed)
        load_fleet(self.settings, fleet, self.clock.start - timedelta(hours=1), 1, lambda _: None)
        self.sites: list[Site] = [fleet.sites[s] for s in sorted(fleet.sites)]
        self.node_id = "region-0"
        ids = [s.site_id for s in self.sites]
        lossy = set(ids[:: max(1, round(1 / scenario.lossy_share))]) if scenario.lossy_share else set()
        self.fleet = LossyFleet(self.sites, scenario.seed, self.clock.start,
                                FaultMix(noncompliant=scenario.noncompliant), lossy=lossy)
        self.redis = redis.Redis.from_url(self.settings.redis)
        self.processes = LoopProcesses(self.settings, lambda name: f"{name}-flow.log", "control")

    @contextmanager
    def running(self) -> Iterator[Harness]:
        """Start both dataflows and the simulator; stop them all afterwards."""
        def transport() -> KafkaTransport:
            return KafkaTransport(self.fleet, self.clock, self.settings, group_id="bench-control-fleet")

        with self.processes.running(transport) as started:
            self._wait_for_fleet(started)
            yield self

    def kill_and_restart_control(self) -> None:
        """SIGKILL the control dataflow and start it again on its recovery store."""
        old = self.processes.flows["control"]
        old.kill()
        old.wait(20)
        self.processes.flows["control"] = self.processes.start_flow("control")

    def _wait_for_fleet(self, transport: KafkaTransport, timeout_s: float = 120.0) -> None:
        """Until the simulator has its command partitions and 95% of the sites are ONLINE in the twin."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.processes.check()
            pipe = self.redis.pipeline(transaction=False)
            for site in self.sites:
                pipe.hget(f"site:{site.site_id}", "status")
            online = sum(1 for status in pipe.execute() if status == b"ONLINE")
            if transport.assigned and online >= 0.95 * len(self.sites):
                return
            time.sleep(0.5)
        raise TimeoutError("the fleet did not come online in the twin")

    def dispatch(self, strategy: str, restart_after_s: float | None = None) -> Run:
        """One dispatch of the scenario's target over the region, watched until its window ends.

        With ``restart_after_s``, the control dataflow is killed that long (simulated) into the
        window and restarted on its recovery store.
        """
        sc = self.scenario
        start = self.clock.now()
        spec = DispatchSpec(sc.target_kw, start, start + timedelta(minutes=sc.minutes), node_id=self.node_id,
                            strategy=strategy)
        watcher = _Watcher(self.settings, spec.dispatch_id)
        submit(self.settings, spec, "bench", self.redis)
        run = Run(spec.dispatch_id, epoch_ms(spec.start), epoch_ms(spec.end), sc.target_kw)
        drop_at = epoch_ms(start) + int(sc.drop_after_s * 1000)
        restart_at = None if restart_after_s is None else epoch_ms(start) + int(restart_after_s * 1000)
        last_event = ""
        while True:
            now_ms = epoch_ms(self.clock.now())
            watcher.poll(run, self.codec, 0.2)
            commanded = {c["site_id"] for c in run.commands if c["setpoint_kw"] != 0.0}
            run.truth.append((now_ms, sum(self.fleet.sites[s].battery_kw for s in commanded)))
            status = read_status(self.redis, spec.dispatch_id)
            if status is not None and status["event_time"] != last_event:
                last_event = status["event_time"]
                run.statuses.append(status)
            if not run.disconnected and now_ms >= drop_at:
                chosen = sorted(commanded)[:: max(1, round(1 / sc.drop_share))] if sc.drop_share else []
                run.disconnected = set(chosen)
                self.fleet.disconnect(chosen)
            if restart_at is not None and now_ms >= restart_at:
                restart_at = None
                self.kill_and_restart_control()
                run.restarted_ms = now_ms
            if status is not None and status["state"] in ("COMPLETED", "PARTIAL", "FAILED", "CANCELLED"):
                break
            if now_ms > run.end_ms + 60_000 * sc.speed:
                raise TimeoutError(f"dispatch {spec.dispatch_id} did not complete; last status {status}\n"
                                   f"{self.processes.log_tail()}")
        watcher.poll(run, self.codec, 1.0)
        watcher.close()
        for site_id in run.disconnected:  # back on the network for the next dispatch
            self.fleet.sites[site_id].disconnected = False
        return run


class _Watcher:
    """Reads the dispatch's commands and their acks off Kafka as they happen."""

    def __init__(self, settings: Settings, dispatch_id: str) -> None:
        self.prefix = f"{dispatch_id}/"
        self.consumer = tail_consumer(settings, [COMMANDS_SITE, COMMANDS_ACKS],
                                      f"bench-control-{dispatch_id}")

    def poll(self, run: Run, codec: Any, wait_s: float) -> None:
        for message in self.consumer.consume(10_000, wait_s):
            value = message.value()
            if message.error() is not None or value is None:
                continue
            record = codec.decode(value)
            if not str(record["command_id"]).startswith(self.prefix):
                continue
            (run.commands if message.topic() == COMMANDS_SITE else run.acks).append(record)

    def close(self) -> None:
        self.consumer.close()


def figures(closed: Run, opened: Run, scenario: Scenario) -> dict[str, float]:
    after = scenario.settle_after_s
    return {
        "closed_loop_error_pct": closed.error_pct(after), "open_loop_error_pct": opened.error_pct(after),
        "closed_loop_true_error_pct": closed.true_error_pct(after),
        "open_loop_true_error_pct": opened.true_error_pct(after),
        "settle_s": closed.settle_s(), "sites": float(scenario.sites), "target_kw": scenario.target_kw,
        "speed": scenario.speed,
    }


def run(quick: bool) -> dict[str, float]:
    """Both dispatches on a private local stack; the figures."""
    scenario = Scenario(sites=300, target_kw=600.0, minutes=4.0) if quick else Scenario()
    with private_stack("vpp-bench-control-") as settings:
        harness = Harness(settings, scenario)
        with harness.running():
            closed = harness.dispatch("waterfill")
            opened = harness.dispatch("waterfill-open-loop")
    return figures(closed, opened, scenario)

