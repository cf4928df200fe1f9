"""The platform's own long-running processes on the local machine: dataflows, gateway, API, the simulated
market, the forecast service, simulator.

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
import urllib.request
from collections.abc import Callable

from core.config import Settings
from vpp.dataflows import dataflow_argv, ensure_recovery, recovery_dir, settings_env
from vpp.supervisor import Managed, PartStatus, Progress, Supervisor, no_progress


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _ready_at(url: str, port: int) -> Callable[[], bool] | None:
    """A dataflow's readiness probe; None (settle instead) when its probe port is 0 (no probes)."""
    return None if port == 0 else lambda: _http_ok(url)


def api_base_url(settings: Settings) -> str:
    """Where the local API listens."""
    return f"http://{settings.host}:{settings.api_port}"


class Services:
    """The telemetry, control, plans and bidding dataflows, the bidding worker, the edge gateway, the API,
    the simulated day-ahead market, the forecast service and a simulated fleet, for one data directory."""

    def __init__(self, settings: Settings, simulated_sites: int = 1000) -> None:
        self.settings = settings
        self.simulated_sites = simulated_sites
        self.data_dir = settings.data_dir.resolve()
        self.supervisor = Supervisor(self.data_dir, settings.startup_timeout_s,
                                     env={**os.environ, **settings_env(settings)})
        self.pids = self.supervisor.pids

    def metrics_env(self, flow: str, port: int) -> dict[str, str]:
        """Bytewax's dataflow API for one flow: /metrics on ``port`` (its own step metrics and ours)."""
        cache = self.data_dir / "run" / f"{flow}-dataflow-api"
        cache.mkdir(parents=True, exist_ok=True)
        return {"BYTEWAX_DATAFLOW_API_ENABLED": "true", "BYTEWAX_DATAFLOW_API_PORT": str(port),
                "BYTEWAX_DATAFLOW_API_CACHE_PATH": str(cache)}

    def services(self) -> list[Managed]:
        """Every service in start order; a dataflow is ready when its /readyz says so."""
        s = self.settings
        recovery = recovery_dir(s, "telemetry")
        control_recovery = recovery_dir(s, "control")
        metrics = f"http://{s.host}:{{}}/metrics"
        plans_recovery = recovery_dir(s, "plans")
        bidding_recovery = recovery_dir(s, "bidding")
        health = f"http://{s.host}:{s.gateway_metrics_port}/healthz"
        gateway_url = f"ws://{s.host}:{s.gateway_port}"
        api_url = api_base_url(s)
        probe_ports = {"telemetry": s.telemetry_probe_port, "control": s.control_probe_port,
                       "plans": s.plans_probe_port, "bidding": s.bidding_probe_port}
        probes = {flow: f"http://{s.host}:{port}/readyz" for flow, port in probe_ports.items()}
        ready = {flow: _ready_at(probes[flow], port) for flow, port in probe_ports.items()}
        return [
            Managed("telemetry", "Telemetry dataflow (Bytewax)",
                    f"{metrics.format(s.telemetry_metrics_port)}  {probes['telemetry']}",
                    lambda: dataflow_argv("telemetry", s, workers=1, recovery=recovery),
                    prepare=lambda: ensure_recovery(recovery),
                    env=lambda: self.metrics_env("telemetry", s.telemetry_metrics_port),
                    ready=ready["telemetry"]),
            Managed("control", "Control dataflow (Bytewax)",
                    f"{metrics.format(s.control_metrics_port)}  {probes['control']}",
                    lambda: dataflow_argv("control", s, workers=1, recovery=control_recovery),
                    prepare=lambda: ensure_recovery(control_recovery),
                    env=lambda: self.metrics_env("control", s.control_metrics_port),
                    ready=ready["control"]),
            Managed("plans", "Plans dataflow (Bytewax)", f"{probes['plans']}  recovery in {plans_recovery}",
                    lambda: dataflow_argv("plans", s, workers=1, recovery=plans_recovery),
                    prepare=lambda: ensure_recovery(plans_recovery), ready=ready["plans"]),
            Managed("bidding", "Bidding orchestrator (Bytewax)",
                    f"{probes['bidding']}  recovery in {bidding_recovery}",
                    lambda: dataflow_argv("bidding", s, workers=1, recovery=bidding_recovery),
                    prepare=lambda: ensure_recovery(bidding_recovery), ready=ready["bidding"]),
            Managed("bid-worker", "Bidding worker", "workflow.tasks -> workflow.results (vpp bid run ASSET)",
                    lambda: [sys.executable, "-m", "vpp", "bid", "worker"]),
            Managed("bid-scheduler", "Bid scheduler",
                    f"every {s.bid_every_s:g} s: {s.bid_assets or 'no assets (set VPP_BID_ASSETS)'}",
                    lambda: [sys.executable, "-m", "vpp", "bid", "schedule"]),
            Managed("gateway", "Edge gateway (WebSocket)", f"{gateway_url}  metrics {health[:-8]}/metrics",
                    lambda: [sys.executable, "-m", "edge_gateway"], ready=lambda: _http_ok(health)),
            Managed("api", "HTTP API and dashboard", f"{api_url}/dashboard/  docs {api_url}/docs",
                    lambda: [sys.executable, "-m", "api"], ready=lambda: _http_ok(f"{api_url}/healthz")),
            Managed("market", "Simulated day-ahead market",
                    f"{s.market_price_series} replayed -> market_prices",
                    lambda: [sys.executable, "-m", "vpp", "forecast", "market"]),
            Managed("forecast", "Forecast service",
                    f"nodes and price regions every {s.forecast_every_min} min",
                    lambda: [sys.executable, "-m", "vpp", "forecast", "serve"]),
            Managed("simulator", "Simulated fleet", f"{self.simulated_sites:,} sites -> {gateway_url}",
                    lambda: [sys.executable, "-m", "edge_gateway.simulate",
                             "--sites", str(self.simulated_sites)]),
        ]

    def up(self, progress: Progress = no_progress) -> list[PartStatus]:
        """Start every service not already running; stop those started here if one fails."""
        return self.supervisor.up(self.services(), progress)

    def status(self) -> list[PartStatus]:
        """Each service's state right now."""
        return self.supervisor.status(self.services())

    def down(self, progress: Progress = no_progress) -> list[PartStatus]:
        """Stop every service (the simulator first, the dataflow last, so it sees all data)."""
        return self.supervisor.down(self.services(), progress)
