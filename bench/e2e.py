"""``vpp bench e2e``: how many simulated sites at 1 Hz the whole local stack holds, and who spends the CPU.

For each fleet size of a rising ladder, a private stack (broker, Redis, history
server) gets a generated fleet of that size (registry, navigation,
``assets.changes``), then the parts a live fleet goes through start as
processes of their own, as ``vpp up`` starts them: the telemetry dataflow (with
its recovery store), the edge gateway, and the fleet simulator (WebSocket
transport, Avro frames, one sample per site and second). Once every region node
reports all its sites, the bench watches for ``minutes`` (5; ``--quick``: a
short window at small sizes): a size *holds* when coverage (reporting over
expected sites, summed over the region nodes, from Redis) never drops below
100% and the p99 of freshness (a region aggregate's write time minus the event
time of the newest reading it includes, per emission) is at most 2 s.

Figures: ``e2e_sites_1hz``, the largest size that held (0 if none did);
for the largest size tried, each part's CPU (``cpu_cores_<part>``: CPU seconds
per wall second over the window, from ``/proc``) and share of the total
(``cpu_share_<part>_pct``), and, per size, ``coverage_min_pct_<n>`` and
``freshness_p99_s_<n>``; ``readings_per_s`` (telemetry frames the gateway took per second
over the window) and ``cpu_us_per_reading_<part>`` (CPU microseconds per reading: the cost of
each part, which unlike its cores varies little with the machine's load). The ladder stops at
the first size that does not hold.
``VPP_BENCH_E2E_SITES`` (comma-separated sizes) and ``VPP_BENCH_E2E_MINUTES``
override the ladder and the window.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis

from assets.generator import generate_fleet
from assets.loader import load_fleet
from bench.local import free_port, gateway_telemetry_frames, private_stack
from core.config import Settings
from core.live import aggregate_hashes
from edge_gateway.sim_transports import raise_fd_limit
from vpp.dataflows import dataflow_argv, ensure_recovery, settings_env
from vpp.stack import Stack

FULL_LADDER = (2_000, 5_000, 7_500, 10_000, 12_500, 15_000, 20_000)
QUICK_LADDER = (200, 500)
FRESHNESS_P99_S = 2.0
PARTS = ("simulator", "gateway", "telemetry", "broker", "redis", "history")
_TICK_S = os.sysconf("SC_CLK_TCK")


@dataclass
class Run:
    """What one fleet size did."""

    sites: int
    held: bool = False
    coverage_min: float = 0.0
    freshness_p99_s: float = float("nan")
    warmup_s: float = float("nan")
    #: CPU seconds per wall second over the window, per part.
    cores: dict[str, float] = field(default_factory=dict)
    #: Telemetry frames the gateway took per second over the window (its ``vpp_gateway_frames_in_total``).
    readings_per_s: float = 0.0
    problem: str = ""


def cpu_seconds(pid: int) -> float | None:
    """User and system CPU seconds ``pid`` and its waited-for children used (None when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # After the command: state is field 3; utime, stime, cutime, cstime are fields 14-17.
    return sum(int(x) for x in fields[11:15]) / _TICK_S


class Fleet:
    """A fleet of ``sites`` on a private stack and the processes it goes through."""

    def __init__(self, settings: Settings, sites: int) -> None:
        self.sites = sites
        self.settings = settings.model_copy(update={
            "gateway_port": free_port(), "gateway_metrics_port": free_port(),
            "telemetry_metrics_port": free_port(), "telemetry_probe_port": free_port()})
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.redis = redis.Redis.from_url(self.settings.redis, socket_timeout=5)
        self.regions: list[str] = []

    @contextmanager
    def running(self) -> Iterator[Fleet]:
        """Load the fleet, start the dataflow, the gateway and the simulator; stop them afterwards."""
        now = datetime.now(UTC)
        fleet = generate_fleet(now - timedelta(hours=1), self.sites, seed=0)
        load_fleet(self.settings, fleet, now - timedelta(hours=1), 1, lambda _: None)
        s = self.settings
        recovery = s.data_dir.resolve() / "recovery" / "e2e-telemetry"
        ensure_recovery(recovery)
        try:
            self._start("telemetry", dataflow_argv("telemetry", s, recovery=recovery))
            self._start("gateway", [sys.executable, "-m", "edge_gateway", "--host", s.host, "--port",
                                    str(s.gateway_port), "--metrics-port", str(s.gateway_metrics_port)])
            self._wait_for_gateway()
            self._start("simulator", [sys.executable, "-m", "edge_gateway.simulate", "--sites",
                                      str(self.sites), "--speed", "1", "--interval", "1"])
            yield self
        finally:
            for name in ("simulator", "gateway", "telemetry"):
                process = self.processes.get(name)
                if process is not None:
                    process.terminate()
                    try:
                        process.wait(30)
                    except subprocess.TimeoutExpired:
                        process.kill()
            self.redis.close()

    def _start(self, part: str, argv: list[str]) -> None:
        log = (self.settings.data_dir / f"e2e-{part}.log").open("ab")
        self.processes[part] = subprocess.Popen(argv, env={**os.environ, **settings_env(self.settings)},
                                                stdout=log, stderr=log)

    def _wait_for_gateway(self, timeout_s: float = 60.0) -> None:
        url = f"http://{self.settings.host}:{self.settings.gateway_metrics_port}/healthz"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.check()
            with suppress(OSError), urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"the gateway did not become healthy within {timeout_s:.0f} s")

    def check(self) -> None:
        """Raise if a part has died, with the end of its log."""
        for name, process in self.processes.items():
            if process.poll() is not None:
                log = self.settings.data_dir / f"e2e-{name}.log"
                raise RuntimeError(f"{name} exited: {log.read_text()[-1500:] if log.exists() else ''}")

    def pids(self) -> dict[str, int]:
        """Process ids of every part."""
        pids = {name: process.pid for name, process in self.processes.items()}
        stack = Stack(self.settings)
        for part in ("broker", "redis", "history"):
            record = stack.pids.running(part)
            if record is not None:
                pids[part] = record.pid
        return pids

    def readings(self) -> float:
        """Telemetry frames the gateway has taken so far (its metrics)."""
        return gateway_telemetry_frames(self.settings.host, self.settings.gateway_metrics_port)

    def region_states(self) -> list[tuple[int, int, int, int]]:
        """(expected, reporting, event ms, written ms) of every region aggregate."""
        if not self.regions:
            self.regions = sorted(node for node, h in aggregate_hashes(self.redis).items()
                                  if h.get("node_kind") == "region")
        pipe = self.redis.pipeline(transaction=False)
        for node in self.regions:
            pipe.hmget(f"node:{node}", "expected_sites", "reporting_sites", "event_time", "updated_at")
        states = []
        for values in pipe.execute():
            if None not in values:
                states.append(tuple(int(float(v)) for v in values))
        return states  # type: ignore[return-value]

    def coverage(self) -> float:
        states = self.region_states()
        expected = sum(s[0] for s in states)
        return sum(s[1] for s in states) / expected if expected == self.sites else 0.0


def measure(settings: Settings, sites: int, window_s: float) -> Run:
    """Run ``sites`` at 1 Hz; whether the stack held them over ``window_s``, and what each part spent."""
    run = Run(sites)
    with Fleet(settings, sites).running() as fleet:
        started = time.monotonic()
        deadline = started + 180 + sites / 50  # a busy machine connects thousands of devices slowly
        while fleet.coverage() < 1.0:
            fleet.check()
            if time.monotonic() > deadline:
                run.problem = "never reached full coverage"
                return run
            time.sleep(0.5)
        run.warmup_s = time.monotonic() - started
        time.sleep(5)  # let the connections' start-up bursts pass
        pids = fleet.pids()
        cpu_before = {part: cpu_seconds(pid) for part, pid in pids.items()}
        readings_before = fleet.readings()
        window_start = time.monotonic()
        emissions: set[tuple[int, int, int]] = set()
        coverages: list[float] = []
        while time.monotonic() - window_start < window_s:
            fleet.check()
            states = fleet.region_states()
            expected = sum(s[0] for s in states)
            coverages.append(sum(s[1] for s in states) / expected if expected == sites else 0.0)
            emissions.update((k, s[2], s[3]) for k, s in enumerate(states))
            time.sleep(0.25)
        elapsed = time.monotonic() - window_start
        run.readings_per_s = (fleet.readings() - readings_before) / elapsed
        for part, pid in pids.items():
            before, after = cpu_before.get(part), cpu_seconds(pid)
            if before is not None and after is not None:
                run.cores[part] = (after - before) / elapsed
    latencies = sorted((written - event) / 1000 for _, event, written in emissions)
    run.coverage_min = min(coverages, default=0.0)
    run.freshness_p99_s = latencies[max(0, int(len(latencies) * 0.99) - 1)] if latencies else float("nan")
    run.held = run.coverage_min >= 1.0 and run.freshness_p99_s <= FRESHNESS_P99_S
    if not run.held:
        run.problem = f"coverage min {run.coverage_min:.4f}, freshness p99 {run.freshness_p99_s:.2f} s"
    return run


def _ladder(quick: bool) -> tuple[int, ...]:
    given = os.environ.get("VPP_BENCH_E2E_SITES")
    if given:
        return tuple(int(x) for x in given.split(",") if x.strip())
    return QUICK_LADDER if quick else FULL_LADDER


def figures_of(runs: list[Run], window_s: float) -> dict[str, float]:
    """The flat figures of the runs (largest size that held, CPU by part of the largest size tried)."""
    held = [r.sites for r in runs if r.held]
    figures: dict[str, float] = {"e2e_sites_1hz": float(max(held, default=0)), "window_s": window_s,
                                 "sizes_tried": float(len(runs))}
    for r in runs:
        figures[f"coverage_min_pct_{r.sites}"] = round(100 * r.coverage_min, 3)
        figures[f"freshness_p99_s_{r.sites}"] = r.freshness_p99_s
        figures[f"warmup_s_{r.sites}"] = r.warmup_s
    last = next((r for r in reversed(runs) if r.cores), None)
    if last is not None:
        total = sum(last.cores.values())
        figures["cpu_sites"] = float(last.sites)
        figures["cpu_cores_total"] = total
        for part in PARTS:
            cores = last.cores.get(part, 0.0)
            figures[f"cpu_cores_{part}"] = cores
            figures[f"cpu_share_{part}_pct"] = 100 * cores / total if total else 0.0
            if last.readings_per_s > 0:
                # Per reading, the figure that stays put while the machine's load (hence each part's
                # speed) varies between runs: what a part costs, not how much it got to run.
                figures[f"cpu_us_per_reading_{part}"] = 1_000_000 * cores / last.readings_per_s
        figures["readings_per_s"] = last.readings_per_s
        simulator = last.cores.get("simulator", 0.0)
        figures["cpu_ms_per_1000_sites_simulator"] = 1_000_000 * simulator / last.sites
    return figures


def run(quick: bool) -> dict[str, float]:
    """Climb the ladder until a size does not hold; figures as in the module docstring."""
    minutes = float(os.environ.get("VPP_BENCH_E2E_MINUTES", "0.25" if quick else "5"))
    window_s = 60 * minutes
    raise_fd_limit()
    runs: list[Run] = []
    for sites in _ladder(quick):
        with private_stack("vpp-bench-e2e-") as settings:
            result = measure(settings, sites, window_s)
        runs.append(result)
        if not result.held:
            break
    return figures_of(runs, window_s)
