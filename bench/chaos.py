"""`vpp bench chaos`: faults against a private local stack, and what the platform made of them.

A simulated fleet (WebSocket, store-and-forward, delivery acknowledgements)
runs through a gateway process into the telemetry dataflow (with recovery) on
a private stack, on an accelerated clock. One fault at a time: sites cut off
from the network, Redis paused (SIGSTOP), the broker paused, the gateway
SIGKILLed and restarted, the telemetry dataflow SIGKILLed and restarted. For
each: seconds from the end of the fault until the fleet's coverage (reporting
over expected sites of the region nodes, as the live aggregates in Redis say)
is back at 100%, and whether the gateway's readiness reported the fault. At the
end, every reading the devices took (their journal) is compared with
``site_minute``: readings lost (taken, not counted in history) and counted
twice, once the uploads are in. A short soak gives each part's RSS growth.

The same harness drives the integration tests (tests/integration/test_chaos.py).
Figures: ``recovery_s_<scenario>``, ``readiness_reported_<scenario>`` (1/0),
``lost_readings``, ``duplicate_readings``, ``rss_growth_pct_<part>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis

from assets.generator import Site, generate_fleet
from assets.loader import load_fleet, republish
from bench.local import free_port, private_stack
from core.config import Settings
from core.dispatch import cancel, read_status, submit
from core.dispatch_spec import DispatchSpec
from core.history import connect
from core.live import aggregate_hashes
from core.waiting import wait_until
from edge_gateway.sim_transports import WebSocketTransport, raise_fd_limit
from edge_gateway.simulator import FleetSimulator, SimClock
from edge_gateway.wire import Encoding
from vpp.dataflows import dataflow_argv, ensure_recovery, settings_env
from vpp.stack import Stack

#: How far ahead of the wall clock the accelerated fleet's event times may be (as in bench/control.py).
SIM_MAX_AHEAD_S = 24 * 3600.0
MINUTE_MS = 60_000
#: A live aggregate older than this (wall time) is not evidence of coverage.
FRESH_S = 5.0
#: The dataflows the harness runs (each with a recovery store of its own).
DATAFLOWS = ("telemetry", "control")
#: How long a restarted system may take to say it is ready (``vpp up`` waits as long for each part).
STARTUP_S = 180.0
#: The node the dispatch scenarios dispatch.
DISPATCH_NODE = "region-0"


@dataclass(frozen=True)
class ChaosConfig:
    """The fleet and its clock: ``speed`` times real time, a sample every ``interval_s`` simulated seconds."""

    sites: int = 200
    speed: float = 4.0
    interval_s: float = 4.0
    seed: int = 19


@dataclass
class Fault:
    """What one fault did: when it ended (wall, monotonic), how long recovery took, what readiness said."""

    name: str
    ended: float = 0.0
    recovery_s: float | None = None
    #: Whether each probe asked about ("gateway", "telemetry", "control") went false during the fault.
    readiness: dict[str, bool] = field(default_factory=dict)
    #: For a fault during a dispatch: mean |target - measured| in % of the target, before the fault
    #: (settled) and after the recovery.
    tracking_error_pct_before: float | None = None
    tracking_error_pct: float | None = None

    @property
    def readiness_reported(self) -> bool | None:
        """Whether every probe asked about said "not ready" during the fault (None: none asked)."""
        return all(self.readiness.values()) if self.readiness else None


@dataclass
class Tally:
    """History against the devices' journal over whole minutes: readings lost and counted twice."""

    minutes: int = 0
    readings: int = 0
    lost: int = 0
    duplicated: int = 0
    problems: list[str] = field(default_factory=list)


class ChaosHarness:
    """A fleet, a gateway process and the telemetry dataflow on a running stack; faults on demand."""

    def __init__(self, settings: Settings, config: ChaosConfig) -> None:
        self.config = config
        self.settings = settings.model_copy(update={
            "telemetry_interval_s": config.interval_s, "delayed_after_s": 3 * config.interval_s,
            "offline_after_s": 30 * config.interval_s, "gateway_produce_stall_s": 5.0,
            "gateway_port": free_port(), "gateway_metrics_port": free_port(), "snapshot_interval_s": 1,
            # The flows' probes on ports of the harness's own, noticing a hanging write within 3 s.
            "telemetry_probe_port": free_port(), "control_probe_port": free_port(), "dataflow_stall_s": 3.0,
            # The control loop on the accelerated clock (as bench/control.py runs it).
            "control_tick_s": 0.2, "control_correction_s": 2.0 * config.speed,
            "control_retry_base_s": 0.5 * config.speed,
            # The simulated clock runs ahead of the wall clock: a deliberately skewed device clock.
            "plausible_max_ahead_s": SIM_MAX_AHEAD_S})
        self.clock = SimClock(datetime.now(UTC), config.speed)
        fleet = generate_fleet(self.clock.start - timedelta(hours=1), config.sites, config.seed)
        load_fleet(self.settings, fleet, self.clock.start - timedelta(hours=1), 1, lambda _: None)
        self.registry = fleet.registry
        self.sites: list[Site] = [fleet.sites[s] for s in sorted(fleet.sites)]
        self.fleet = FleetSimulator(self.sites, config.seed, self.clock.start)
        #: Every reading a device took and meant to deliver, by (site, seq).
        self.journal: dict[tuple[str, int], dict[str, Any]] = {}
        for site in self.fleet.sites.values():
            site.journal = self.journal
        self.redis = redis.Redis.from_url(self.settings.redis, socket_timeout=2)
        self.stack = Stack(self.settings)
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        #: Seconds the last whole-stack restart took to be ready again (``vpp up``'s part of it).
        self.startup_s: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- parts -----------------------------------------------------------------------------

    @contextmanager
    def running(self) -> Iterator[ChaosHarness]:
        """Start the dataflow, the gateway and the fleet; stop them all afterwards."""
        raise_fd_limit()
        for flow in DATAFLOWS:
            ensure_recovery(self.recovery_of(flow))
            self.start(flow)
        self.start("gateway")
        self._thread = threading.Thread(target=lambda: asyncio.run(self._simulate()), daemon=True)
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(30)
            for process in self.processes.values():
                process.terminate()
            for process in self.processes.values():
                try:
                    process.wait(20)
                except subprocess.TimeoutExpired:
                    process.kill()
            self.redis.close()

    def recovery_of(self, flow: str) -> Path:
        return self.settings.data_dir.resolve() / "recovery" / f"chaos-{flow}"

    def start(self, part: str) -> None:
        """Start the gateway or a dataflow (telemetry, control) as a process of its own."""
        s = self.settings
        argv = (dataflow_argv(part, s, recovery=self.recovery_of(part)) if part in DATAFLOWS else
                [sys.executable, "-m", "edge_gateway", "--host", s.host, "--port", str(s.gateway_port),
                 "--metrics-port", str(s.gateway_metrics_port), "--instance-id", "chaos-gateway"])
        log = (s.data_dir / f"chaos-{part}.log").open("ab")
        self.processes[part] = subprocess.Popen(argv, env={**os.environ, **settings_env(s)}, stdout=log,
                                                stderr=log)

    def kill(self, part: str) -> None:
        """SIGKILL the gateway or a dataflow: no clean shutdown, nothing flushed."""
        process = self.processes[part]
        process.kill()
        process.wait(30)

    def stop(self, part: str) -> None:
        """Stop the gateway or a dataflow as ``vpp down`` does (SIGTERM, SIGKILL after 20 s)."""
        process = self.processes[part]
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(30)

    @contextmanager
    def stack_restarted(self) -> Iterator[None]:
        """The whole system down for the block, as ``vpp down``: the gateway and the dataflows, then the
        broker, Redis and the history server; then up again as ``vpp up``: the stack (the memory-only
        broker comes back empty), the fleet stored in history re-published, the dataflows on their
        recovery stores, the gateway. The devices keep measuring and upload what they kept.

        The block ends, as ``vpp up`` returns, once every process says it is ready (within
        ``STARTUP_S``); how long that took from the start of ``up`` is :attr:`startup_s` (on a
        loaded machine mostly the processes' imports)."""
        for part in ("gateway", *DATAFLOWS):
            self.stop(part)
        self.stack.down()
        try:
            yield
        finally:
            began = time.monotonic()
            self.stack.up()
            republish(self.settings, datetime.now(UTC), lambda _: None)
            for part in (*DATAFLOWS, "gateway"):
                self.start(part)
            wait_until(lambda: all(self.ready(part) for part in ("gateway", *DATAFLOWS)), STARTUP_S,
                       interval_s=0.25)
            self.startup_s = time.monotonic() - began

    @contextmanager
    def paused(self, part: str) -> Iterator[None]:
        """The stack's ``redis`` or ``broker`` stopped (SIGSTOP) for the block: it holds its sockets
        and answers nothing, like a machine that froze."""
        record = self.stack.pids.running(part)
        assert record is not None, f"{part} is not running"
        os.kill(record.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(record.pid, signal.SIGCONT)

    @contextmanager
    def cut_off(self, site_ids: list[str]) -> Iterator[None]:
        """These sites off the network for the block (they keep measuring and keep their readings)."""
        for site_id in site_ids:
            self.fleet.sites[site_id].disconnected = True
        try:
            yield
        finally:
            for site_id in site_ids:
                self.fleet.sites[site_id].disconnected = False

    @contextmanager
    def killed(self, part: str) -> Iterator[None]:
        """The gateway or a dataflow SIGKILLed for the block, started again after it."""
        self.kill(part)
        try:
            yield
        finally:
            self.start(part)

    @contextmanager
    def starved(self, stopped_s: float = 0.8, running_s: float = 0.2) -> Iterator[None]:
        """Every process of the stack (broker, Redis, history server, gateway, dataflows) gets the CPU
        only ``running_s`` of every ``stopped_s + running_s`` seconds for the block: SIGSTOP and
        SIGCONT in turn, so the starvation hits this stack and not the rest of the machine."""
        stop = threading.Event()

        def duty_cycle() -> None:
            while not stop.is_set():
                pids = list(self.part_pids().values())
                _signal_all(pids, signal.SIGSTOP)
                stop.wait(stopped_s)
                _signal_all(pids, signal.SIGCONT)
                stop.wait(running_s)

        thread = threading.Thread(target=duty_cycle, name="chaos-starve", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(10)
            _signal_all(list(self.part_pids().values()), signal.SIGCONT)

    async def _simulate(self) -> None:
        transport = WebSocketTransport(self.fleet, self.clock, self.settings,
                                       f"ws://{self.settings.host}:{self.settings.gateway_port}",
                                       Encoding.AVRO, self.config.interval_s, self.config.seed)
        self.transport = transport
        task = asyncio.create_task(transport.run(None))
        while not self._stop.is_set() and not task.done():
            await asyncio.sleep(0.2)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    # ---- what the platform says --------------------------------------------------------------

    def coverage(self) -> float | None:
        """Reporting over expected sites of the region nodes, from Redis; None if Redis does not answer.

        An aggregate not written for ``FRESH_S`` counts as nothing reporting: a dataflow that is down
        leaves its last (full) coverage in Redis, which says nothing about the fleet now.
        """
        try:
            hashes = aggregate_hashes(self.redis)
        except redis.RedisError:
            return None
        now_ms = time.time() * 1000
        regions = [h for h in hashes.values() if h.get("node_kind") == "region"]
        expected = sum(int(h.get("expected_sites", 0)) for h in regions)
        reporting = sum(int(h.get("reporting_sites", 0)) for h in regions
                        if now_ms - float(h.get("updated_at", 0)) < FRESH_S * 1000)
        return reporting / expected if expected else 0.0

    def gateway_ready(self) -> bool:
        """The gateway's /readyz: 200 (True), else False (not ready or not answering)."""
        return _ok(f"http://{self.settings.host}:{self.settings.gateway_metrics_port}/readyz")

    def flow_ready(self, flow: str = "telemetry") -> bool:
        """A dataflow's /readyz: 200 (True), else False (not ready or not answering)."""
        port = self.settings.telemetry_probe_port if flow == "telemetry" else self.settings.control_probe_port
        return _ok(f"http://{self.settings.host}:{port}/readyz")

    def ready(self, part: str) -> bool:
        """The /readyz of the gateway, the telemetry or the control dataflow."""
        return self.gateway_ready() if part == "gateway" else self.flow_ready(part)

    def wait_for_coverage(self, since: float, timeout_s: float = 120.0,
                          also: Callable[[], bool] | None = None) -> float | None:
        """Seconds from ``since`` (monotonic) until coverage is 100% (and ``also()`` holds); None if not
        within ``timeout_s``."""
        deadline = since + timeout_s
        while time.monotonic() < deadline:
            if self.coverage() == 1.0 and (also is None or also()):
                return time.monotonic() - since
            time.sleep(0.25)
        return None

    def fault(self, name: str, inject: Callable[[], contextlib.AbstractContextManager[None]],
              hold_s: float, reported_by: tuple[str, ...] = ("gateway", "telemetry"),
              timeout_s: float = 120.0, recovered: Callable[[], bool] | None = None) -> Fault:
        """Hold the fault ``inject`` gives for ``hold_s``, watching the readiness of the parts in
        ``reported_by`` (those the fault should turn not ready: "gateway", "telemetry", "control");
        then time the recovery: coverage back at 100% (and ``recovered()``, when given)."""
        result = Fault(name)
        not_ready = dict.fromkeys(reported_by, False)
        with inject():
            deadline = time.monotonic() + hold_s
            while time.monotonic() < deadline:
                for part in reported_by:
                    not_ready[part] = not_ready[part] or not self.ready(part)
                time.sleep(0.5)
        result.ended = time.monotonic()
        result.readiness = not_ready
        result.recovery_s = self.wait_for_coverage(result.ended, timeout_s, recovered)
        return result

    def dispatch_fault(self, name: str, inject: Callable[[], contextlib.AbstractContextManager[None]],
                       hold_s: float, reported_by: tuple[str, ...] = ("control",),
                       measure_s: float = 30.0) -> Fault:
        """The fault while a dispatch runs: 1 kW per site of region-0 discharged, closed loop.

        Waits (up to 2 minutes) for the dispatch to settle and measures its tracking error for
        ``measure_s``; holds the fault; counts as recovered once coverage is full and the control
        flow writes the dispatch's status again; then measures the tracking error for ``measure_s``
        once more, and cancels the dispatch.
        """
        members = sum(1 for site in self.sites if site.region == DISPATCH_NODE)
        start = self.clock.now()
        spec = DispatchSpec(float(members), start, start + timedelta(hours=1), node_id=DISPATCH_NODE)
        submit(self.settings, spec, "chaos", self.redis)
        tracker = _Tracker(self.redis, spec.dispatch_id, spec.target_kw)
        wait_until(tracker.settled, 120, interval_s=0.25)
        before = tracker.error_pct_over(measure_s)
        ended_ms: list[int] = []

        @contextmanager
        def with_end() -> Iterator[None]:
            with inject():
                yield
            ended_ms.append(self.sim_ms())

        result = self.fault(name, with_end, hold_s, reported_by,
                            recovered=lambda: tracker.written_since(ended_ms[0]))
        result.tracking_error_pct_before = before
        result.tracking_error_pct = tracker.error_pct_over(measure_s)
        cancel(self.settings, spec.dispatch_id, "chaos", self.redis)
        return result

    def tally(self, before_ms: int, after_ms: int = 0) -> Tally:
        """``site_minute`` against the journal, for whole minutes in [after_ms, before_ms): lost and doubled.

        Also checks each (site, minute)'s mean, min and max battery power and last SoC against the
        readings, and each region, feeder and program node minute's reporting sites and summed mean
        battery power (the brute force over every reading).
        """
        want = _site_minutes(r for r in list(self.journal.values())
                             if after_ms <= _event_ms(r) < before_ms)
        tally = Tally(minutes=len({m for _, m in want}), readings=sum(len(v) for v in want.values()))
        got = _history_rows(self.settings, "site_minute", "site_id", after_ms, before_ms)
        for key, readings in want.items():
            row = got.get(key)
            samples = int(row["samples"]) if row else 0
            tally.lost += max(0, len(readings) - samples)
            tally.duplicated += max(0, samples - len(readings))
            if row and samples == len(readings):
                tally.problems += _row_problems(key, row, readings)
        tally.duplicated += sum(int(r["samples"]) for k, r in got.items() if k not in want)
        tally.problems += self._node_problems(want, after_ms, before_ms)
        return tally

    def _node_problems(self, want: dict[tuple[str, int], list[dict[str, Any]]], after_ms: int,
                       before_ms: int) -> list[str]:
        got = _history_rows(self.settings, "node_minute", "node_id", after_ms, before_ms)
        expected: dict[tuple[str, int], list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
        minutes = sorted({m for _, m in want})
        for site in self.sites:
            nodes = [n for chain in self.registry.ancestors(site.site_id, self.clock.start).values()
                     for n in chain]
            for minute in minutes:
                readings = want.get((site.site_id, minute))
                for node in nodes:
                    entry = expected[(node, minute)]
                    entry[0] += 1
                    if readings:
                        entry[1] += 1
                        entry[2] += sum(r["battery_kw"] for r in readings) / len(readings)
        problems = []
        for key, (sites, reporting, battery) in expected.items():
            row = got.get(key)
            if row is None:
                problems.append(f"node minute {key} missing")
            elif (int(row["expected_sites"]), int(row["reporting_sites"])) != (sites, reporting) or not (
                    math.isclose(float(row["battery_kw"]), battery, rel_tol=1e-6, abs_tol=1e-6)):
                problems.append(f"node minute {key}: expected {sites:.0f}/{reporting:.0f}/{battery:.4f} kW, "
                                f"history {row['expected_sites']}/{row['reporting_sites']}/"
                                f"{float(row['battery_kw']):.4f} kW")
        return problems

    def settle(self, before_ms: int, after_ms: int = 0, timeout_s: float = 240.0) -> Tally:
        """The tally once history stops improving (uploads in, minutes closed) or ``timeout_s`` passed."""
        deadline = time.monotonic() + timeout_s
        tally = self.tally(before_ms, after_ms)
        while (tally.lost or tally.duplicated or tally.problems) and time.monotonic() < deadline:
            time.sleep(3)
            tally = self.tally(before_ms, after_ms)
        return tally

    def sim_ms(self) -> int:
        """The fleet's clock now, epoch ms."""
        return int(self.clock.now().timestamp() * 1000)

    def part_pids(self) -> dict[str, int]:
        """Process ids of every part, for RSS."""
        pids = {name: process.pid for name, process in self.processes.items()}
        for part in ("broker", "redis", "history"):
            record = self.stack.pids.running(part)
            if record is not None:
                pids[part] = record.pid
        return pids


class _Tracker:
    """A dispatch's statuses as the control flow stores them in Redis, and how well it tracks."""

    def __init__(self, client: redis.Redis, dispatch_id: str, target_kw: float) -> None:
        self._redis = client
        self._id = dispatch_id
        self._target = target_kw

    def status(self) -> dict[str, str] | None:
        try:
            return read_status(self._redis, self._id)
        except redis.RedisError:
            return None

    def settled(self) -> bool:
        """Active, with the measured power within 5% of the target."""
        status = self.status()
        return bool(status and status["state"] == "ACTIVE"
                    and abs(float(status["error_kw"])) <= 0.05 * abs(self._target))

    def written_since(self, sim_ms: int) -> bool:
        """Whether the control flow stored a status of an event time after ``sim_ms``."""
        status = self.status()
        return bool(status and int(status["event_time"]) > sim_ms)

    def error_pct_over(self, seconds: float) -> float | None:
        """Mean |target - measured| in % of the target over each status stored in the next ``seconds``."""
        errors: dict[str, float] = {}
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            status = self.status()
            if status and status["state"] == "ACTIVE":
                errors[status["event_time"]] = abs(float(status["error_kw"]))
            time.sleep(0.25)
        return 100 * sum(errors.values()) / len(errors) / abs(self._target) if errors else None


def _ok(url: str) -> bool:
    """Whether ``url`` answers 200 within 2 s."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, TimeoutError):
        return False


def _signal_all(pids: list[int], signum: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def _event_ms(reading: dict[str, Any]) -> int:
    return int(reading["event_time"].timestamp() * 1000)


def _site_minutes(readings: Any) -> dict[tuple[str, int], list[dict[str, Any]]]:
    out: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for r in readings:
        t = _event_ms(r)
        out[(r["site_id"], t - t % MINUTE_MS)].append(r)
    return out


def _row_problems(key: tuple[str, int], row: dict[str, Any], readings: list[dict[str, Any]]) -> list[str]:
    last = max(readings, key=lambda r: (_event_ms(r), r["seq"]))
    want = {"battery_kw_mean": sum(r["battery_kw"] for r in readings) / len(readings),
            "battery_kw_min": min(r["battery_kw"] for r in readings),
            "battery_kw_max": max(r["battery_kw"] for r in readings), "soc_pct_last": last["soc_pct"]}
    return [f"site minute {key}.{name}: expected {value}, history {row[name]}"
            for name, value in want.items() if not math.isclose(float(row[name]), value, abs_tol=1e-6)]


def _history_rows(settings: Settings, table: str, key: str, after_ms: int,
                  before_ms: int) -> dict[tuple[str, int], dict[str, Any]]:
    client = connect(settings)
    try:
        result = client.query(
            f"SELECT * FROM {settings.clickhouse_database}.{table} FINAL "
            "WHERE minute >= fromUnixTimestamp64Milli({a:Int64}) "
            "AND minute < fromUnixTimestamp64Milli({b:Int64})",
            parameters={"a": after_ms, "b": before_ms})
        rows = {}
        for row in result.named_results():
            minute = row["minute"]
            aware = minute if minute.tzinfo else minute.replace(tzinfo=UTC)
            rows[(row[key], int(aware.timestamp() * 1000))] = dict(row)
        return rows
    finally:
        client.close()


def rss_kb(pid: int) -> int | None:
    """Resident set size of ``pid`` in KiB (None when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def next_minute_ms(t_ms: int) -> int:
    return t_ms - t_ms % MINUTE_MS + MINUTE_MS


def run(quick: bool) -> dict[str, float]:
    """Every scenario once on a private stack; figures as in the module docstring."""
    config = ChaosConfig(sites=100 if quick else 200)
    hold_s = 8.0 if quick else 20.0
    starve_s = 15.0 if quick else 60.0
    soak_s = 20.0 if quick else 120.0
    figures: dict[str, float] = {"sites": config.sites, "fault_s": hold_s, "speed": config.speed}
    with private_stack("vpp-bench-chaos-") as settings, ChaosHarness(settings, config).running() as h:
        warm = h.wait_for_coverage(time.monotonic(), 300)
        assert warm is not None, "the fleet never reached full coverage"
        after_ms = next_minute_ms(h.sim_ms())
        cut = [s.site_id for s in h.sites[:: 10]]
        faults = [
            h.fault("sites_cut_off", lambda: h.cut_off(cut), hold_s, reported_by=()),
            h.fault("redis_paused", lambda: h.paused("redis"), hold_s),
            h.fault("broker_paused", lambda: h.paused("broker"), hold_s),
            h.fault("gateway_killed", lambda: h.killed("gateway"), hold_s, reported_by=("gateway",)),
            h.fault("telemetry_flow_killed", lambda: h.killed("telemetry"), hold_s,
                    reported_by=("telemetry",)),
            h.dispatch_fault("control_flow_killed", lambda: h.killed("control"), hold_s,
                             measure_s=10.0 if quick else 30.0),
            h.fault("cpu_starved", h.starved, starve_s, reported_by=()),
            h.fault("stack_restarted", h.stack_restarted, hold_s, reported_by=("gateway", "telemetry")),
        ]
        before_ms = next_minute_ms(h.sim_ms())
        pids = h.part_pids()
        start_rss = {name: rss_kb(pid) for name, pid in pids.items()}
        time.sleep(soak_s)
        end_rss = {name: rss_kb(pid) for name, pid in pids.items()}
        tally = h.settle(before_ms, after_ms)
    for fault in faults:
        figures[f"recovery_s_{fault.name}"] = -1.0 if fault.recovery_s is None else round(fault.recovery_s, 1)
        if fault.readiness_reported is not None:
            figures[f"readiness_reported_{fault.name}"] = float(fault.readiness_reported)
        for key, value in (("tracking_error_pct_before", fault.tracking_error_pct_before),
                           ("tracking_error_pct", fault.tracking_error_pct)):
            if value is not None:
                figures[f"{key}_{fault.name}"] = round(value, 2)
    if h.startup_s is not None:
        figures["startup_s_stack_restarted"] = round(h.startup_s, 1)
    figures.update(lost_readings=tally.lost, duplicate_readings=tally.duplicated, readings=tally.readings,
                   history_mismatches=len(tally.problems), soak_s=soak_s)
    for name, before in start_rss.items():
        after = end_rss.get(name)
        if before and after:
            figures[f"rss_growth_pct_{name}"] = round(100.0 * (after - before) / before, 1)
    return figures
