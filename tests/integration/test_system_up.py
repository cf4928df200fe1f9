"""`vpp up` as the README runs it: stack, fleet, telemetry dataflow, gateway and a simulated fleet.

The bid scheduler is given the state node to bid (``VPP_BID_ASSETS``): a run of it appears.

The proof that everything is wired: simulated devices talk WebSocket to the
gateway, the gateway produces to Kafka, the dataflow rolls the fleet up, and
the live aggregate of the fleet's state node appears in Redis with every
simulated site reporting, where `vpp live` reads it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from core.waiting import wait_until
from tests.conftest import free_port

#: Budgets that only a hang exceeds: on a machine at load 30, `vpp up` alone takes minutes.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

SITES = 40
#: Seconds any one `vpp` command, or any one wait for the fleet, may take before the test gives up.
PATIENCE_S = 600


def _vpp(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vpp.cli", *args], env=env, capture_output=True, text=True,
                          check=False, timeout=PATIENCE_S)


def test_up_runs_the_fleet_end_to_end_and_down_stops_it(cli_data_dir: Path) -> None:
    redis_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("VPP_")}
    env.update(VPP_DATA_DIR=str(cli_data_dir), VPP_KAFKA_PORT=str(free_port()),
               VPP_REDIS_PORT=str(redis_port), VPP_CLICKHOUSE_PORT=str(free_port()),
               VPP_GATEWAY_PORT=str(free_port()),
               VPP_GATEWAY_METRICS_PORT=str(free_port()), VPP_API_PORT=str(free_port()),
               VPP_TELEMETRY_METRICS_PORT=str(free_port()), VPP_CONTROL_METRICS_PORT=str(free_port()),
               VPP_TELEMETRY_PROBE_PORT=str(free_port()), VPP_CONTROL_PROBE_PORT=str(free_port()),
               VPP_PLANS_PROBE_PORT=str(free_port()), VPP_BIDDING_PROBE_PORT=str(free_port()),
               COLUMNS="200", VPP_BID_ASSETS="node:state-0",
               VPP_STARTUP_TIMEOUT_S="240")  # each part's readiness: slow, not failed, on a loaded machine
    try:
        up = _vpp(env, "up", "--sites", str(SITES))
        assert up.returncode == 0, up.stdout + up.stderr
        for name in ("Telemetry dataflow", "Plans dataflow", "Bidding orchestrator", "Bidding worker",
                     "Bid scheduler", "Edge gateway", "HTTP API and dashboard",
                     "Simulated day-ahead market", "Forecast service", "Simulated fleet"):
            assert name in up.stdout
        assert f"dashboard: http://127.0.0.1:{env['VPP_API_PORT']}/dashboard/#token=" in up.stdout
        client = redis.Redis(port=redis_port, decode_responses=True)

        def counted(key: str, field: str) -> int:
            return int(client.hget(key, field) or 0)

        wait_until(lambda: counted("node:state-0", "reporting_sites") >= SITES, PATIENCE_S, interval_s=0.2)
        reporting = counted("node:state-0", "reporting_sites")
        assert reporting == SITES, f"{reporting} of {SITES} simulated sites reporting at the state node"
        # the plans dataflow runs: the state node's aggregate plan counts every site
        wait_until(lambda: counted("plan:node:state-0", "expected_sites") >= SITES, PATIENCE_S,
                   interval_s=0.2)
        planned_over = counted("plan:node:state-0", "expected_sites")
        assert planned_over == SITES, f"the plans dataflow counts {planned_over} of {SITES} sites"
        # The bid scheduler bids the state node (VPP_BID_ASSETS): a run sized from its live aggregate
        # asked for (its mark stays only once the request is on workflow.events).
        asked = wait_until(lambda: any(client.scan_iter("bid:scheduled:node:state-0@*")), PATIENCE_S,
                           interval_s=0.2)
        assert asked, "the bid scheduler asked for a run of node:state-0"
        live = _vpp(env, "live")
        assert live.returncode == 0, live.stderr
        assert "state-0" in live.stdout and f"{SITES}/{SITES}" in live.stdout
        status = _vpp(env, "status")
        assert status.returncode == 0, status.stdout
    finally:
        down = _vpp(env, "down")
    assert down.returncode == 0, down.stderr
    assert "stopped 11 service(s)" in down.stdout
    assert "stopped 3 part(s)" in down.stdout
