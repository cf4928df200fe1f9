"""The platform's own long-running processes on the local machine: dataflows, gateway, simulator.

:mod:`vpp.stack` runs the infrastructure (broker, Redis, history server); this
module runs what the project itself is made of, the same way (detached, pid
files under ``<data_dir>/run``, logs under ``<data_dir>/logs``), so ``vpp up``
starts everything, ``vpp status`` shows it, and ``vpp down`` stops it.

Each service gets the caller's settings as ``VPP_*`` variables, so a
non-default port or data directory reaches every process.
"""

from __future__ import annotations

import os
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from core.config import Settings
from vpp.dataflows import dataflow_argv, ensure_recovery, recovery_dir, settings_env
from vpp.processes import PidFiles, ProcessRecord, is_alive, log_tail, spawn, stop
from vpp.stack import PartState, PartStatus, StackError

Progress = Callable[[str], None]

#: How long a service must stay up before it counts as started (dataflows have no health endpoint).
SETTLE_S = 2.0


@dataclass(frozen=True)
class Service:
    name: str
    title: str
    address: str
    argv: list[str]
    #: True once the service answers; None means "still running after SETTLE_S".
    ready: Callable[[], bool] | None = None
    prepare: Callable[[], None] | None = None


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def api_base_url(settings: Settings) -> str:
    """Where the local API listens."""
    return f"http://{settings.host}:{settings.api_port}"


class Services:
    """The telemetry and control dataflows, the edge gateway, the API and a simulated fleet, for one data
    directory."""

    def __init__(self, settings: Settings, simulated_sites: int = 1000) -> None:
        self.settings = settings
        self.simulated_sites = simulated_sites
        self.data_dir = settings.data_dir.resolve()
        self.pids = PidFiles(self.data_dir / "run")

    def services(self) -> list[Service]:
        s = self.settings
        recovery = recovery_dir(s, "telemetry")
        control_recovery = recovery_dir(s, "control")
        health = f"http://{s.host}:{s.gateway_metrics_port}/healthz"
        gateway_url = f"ws://{s.host}:{s.gateway_port}"
        api_url = api_base_url(s)
        return [
            Service("telemetry", "Telemetry dataflow (Bytewax)", f"recovery in {recovery}",
                    dataflow_argv("telemetry", s, workers=1, recovery=recovery),
                    prepare=lambda: ensure_recovery(recovery)),
            Service("control", "Control dataflow (Bytewax)", f"recovery in {control_recovery}",
                    dataflow_argv("control", s, workers=1, recovery=control_recovery),
                    prepare=lambda: ensure_recovery(control_recovery)),
            Service("gateway", "Edge gateway (WebSocket)", f"{gateway_url}  metrics {health[:-8]}/metrics",
                    [sys.executable, "-m", "edge_gateway"], ready=lambda: _http_ok(health)),
            Service("api", "HTTP API and dashboard", f"{api_url}/dashboard/  docs {api_url}/docs",
                    [sys.executable, "-m", "api"], ready=lambda: _http_ok(f"{api_url}/healthz")),
            Service("simulator", "Simulated fleet", f"{self.simulated_sites:,} sites -> {gateway_url}",
                    [sys.executable, "-m", "edge_gateway.simulate", "--sites", str(self.simulated_sites)]),
        ]

    def _env(self) -> dict[str, str]:
        return {**os.environ, **settings_env(self.settings)}

    def up(self, progress: Progress) -> list[PartStatus]:
        """Start every service not already running; stop those started here if one fails."""
        statuses: list[PartStatus] = []
        started: list[ProcessRecord] = []
        try:
            for service in self.services():
                statuses.append(self._start(service, started, progress))
        except BaseException:
            for record in reversed(started):
                stop(record)
                self.pids.remove(record.name)
            raise
        return statuses

    def _start(self, service: Service, started: list[ProcessRecord], progress: Progress) -> PartStatus:
        running = self.pids.running(service.name)
        if running is not None:
            return PartStatus(service.name, service.title, service.address, PartState.ALREADY_RUNNING,
                              running.pid)
        progress(f"starting {service.title}")
        if service.prepare is not None:
            service.prepare()
        log = self.data_dir / "logs" / f"{service.name}.log"
        _, record = spawn(service.name, service.argv, service.address, log, env=self._env())
        started.append(record)
        self.pids.write(record)
        self._wait(service, record, log)
        return PartStatus(service.name, service.title, service.address, PartState.STARTED, record.pid)

    def _wait(self, service: Service, record: ProcessRecord, log: Path) -> None:
        deadline = time.monotonic() + self.settings.startup_timeout_s
        settle_until = time.monotonic() + SETTLE_S
        while time.monotonic() < deadline:
            if not is_alive(record):
                raise StackError(f"{service.title} exited while starting; its log ({log}) ends with:\n"
                                 f"{log_tail(log)}")
            if service.ready is not None and service.ready():
                return
            if service.ready is None and time.monotonic() >= settle_until:
                return
            time.sleep(0.1)
        raise StackError(f"{service.title} did not become ready within "
                         f"{self.settings.startup_timeout_s:.0f} s; see {log}")

    def status(self) -> list[PartStatus]:
        statuses = []
        for service in self.services():
            record = self.pids.running(service.name)
            if record is None:
                statuses.append(PartStatus(service.name, service.title, service.address, PartState.STOPPED))
                continue
            healthy = service.ready() if service.ready is not None else True
            state = PartState.RUNNING if healthy else PartState.UNHEALTHY
            statuses.append(PartStatus(service.name, service.title, service.address, state, record.pid))
        return statuses

    def down(self, progress: Progress) -> list[PartStatus]:
        """Stop every service (the simulator first, the dataflow last, so it sees all data)."""
        stopped = []
        for service in reversed(self.services()):
            record = self.pids.running(service.name)
            if record is None:
                continue
            progress(f"stopping {service.title} (pid {record.pid})")
            stop(record)
            self.pids.remove(service.name)
            stopped.append(PartStatus(service.name, service.title, service.address, PartState.STOPPED,
                                      record.pid))
        return stopped
