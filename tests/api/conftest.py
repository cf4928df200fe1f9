"""A live fleet behind the real API, shared by every test of tests/api.

Once per package, on the session stack: a generated fleet loaded two days in
the past (so navigation "at a past time" has a past), the real telemetry and
control dataflows, the simulator driving every site straight into Kafka, and
the API itself served by uvicorn on a free port (so streams and the
dashboard's browser use real HTTP). Everything stops, and the fleet, twins
and history are cleared, when the package is done, before tests elsewhere
use the stack.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import redis
import uvicorn

from api.app import create_app
from api.auth import Scope, issue_api_token
from assets.generator import Fleet, generate_fleet
from assets.loader import load_fleet
from assets.registry import Node
from core import history
from core.config import Settings
from schemas.times import epoch_ms
from tests.conftest import free_port
from vpp.dataflows import dataflow_argv, settings_env

SITES = 120
LOADED_AT = datetime.now(UTC).replace(microsecond=0) - timedelta(days=2)
_CLEARED_TABLES = ("asset_sites", "asset_nodes", "asset_membership", "site_minute", "site_hour", "site_day",
                   "node_minute", "node_hour", "node_day", "dispatch_log")


@dataclass
class Api:
    """The running API, its settings and fleet, and a client per kind of token."""

    url: str
    settings: Settings
    fleet: Fleet
    tokens: dict[str, str] = field(default_factory=dict)
    #: The services behind it by name (telemetry, control, simulator), for tests that pause one.
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def client(self, who: str | None) -> httpx.Client:
        """An HTTP client with ``who``'s token (None: no token)."""
        headers = {"Authorization": f"Bearer {self.tokens[who]}"} if who else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def site_of(self, customer: str) -> str:
        """The site a customer token of the fixture owns."""
        return sorted(self.fleet.sites)[{"customer_a": 0, "customer_b": 1}[customer]]


def _reset(settings: Settings) -> None:
    with redis.Redis.from_url(settings.redis) as rds:
        rds.flushdb()
    client = history.connect(settings)
    for table in _CLEARED_TABLES:
        client.command(f"TRUNCATE TABLE IF EXISTS {settings.clickhouse_database}.{table}")
    client.close()


#: Nodes without sites in a hierarchy of their own, where the asset tests add, move and retire sites
#: without changing what the other tests see of region-0 and state-0.
SPARE_NODES = (("region-spare", "region", None), ("substation-spare-0", "substation", "region-spare"),
               ("substation-spare-1", "substation", "region-spare"),
               ("feeder-spare-0", "feeder", "substation-spare-0"),
               ("feeder-spare-1", "feeder", "substation-spare-0"), ("state-spare", "state", None),
               ("county-spare", "county", "state-spare"), ("postcode-spare", "postcode", "county-spare"))


def _add_spare_nodes(fleet: Fleet) -> None:
    for node_id, kind, parent in SPARE_NODES:
        fleet.registry.add_node(Node(node_id, kind, node_id), parent, LOADED_AT)


def _spawn(argv: list[str], settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, **settings_env(settings)}
    with log.open("wb") as out:
        return subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)


def _wait_reporting(settings: Settings, node: str, expected: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    with redis.Redis.from_url(settings.redis, decode_responses=True) as rds:
        while time.monotonic() < deadline:
            if int(float(rds.hget(f"node:{node}", "reporting_sites") or 0)) >= expected:
                return
            time.sleep(0.5)
    raise AssertionError(f"{node} never had {expected} sites reporting")


class _Server(uvicorn.Server):
    """uvicorn on a thread, without its signal handlers (pytest owns them)."""

    def install_signal_handlers(self) -> None:
        return None


@contextmanager
def serve(settings: Settings) -> Iterator[str]:
    """Serve ``create_app(settings)`` on a free port until the generator is closed; yields the URL."""
    port = free_port()
    server = _Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning",
                                    access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120  # a budget for a loaded machine, not a measurement
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "the API did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="package")
def api(stack_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """The API over a live simulated fleet (telemetry and control dataflows running)."""
    settings = stack_settings.model_copy(update={"emit_interval_s": 0.5})
    _reset(settings)
    fleet = generate_fleet(LOADED_AT, SITES, seed=7)
    _add_spare_nodes(fleet)
    load_fleet(settings, fleet, LOADED_AT, epoch_ms(LOADED_AT), lambda _: None)
    logs = tmp_path_factory.mktemp("api-services")
    processes = [
        _spawn(dataflow_argv(name, settings, workers=1, recovery=None), settings, logs / f"{name}.log")
        for name in ("telemetry", "control")
    ] + [
        _spawn([sys.executable, "-m", "edge_gateway.simulate", "--sites", str(SITES), "--seed", "7",
                "--transport", "kafka"], settings, logs / "simulator.log"),
    ]
    try:
        _wait_reporting(settings, "state-0", SITES, timeout_s=120)
        customers = sorted(fleet.sites)
        tokens = {
            "admin": issue_api_token(settings, "ops-admin", {Scope.ADMIN}).token,
            "read": issue_api_token(settings, "grafana", {Scope.READ}).token,
            "dispatch": issue_api_token(settings, "trader", {Scope.READ, Scope.DISPATCH}).token,
            "assets": issue_api_token(settings, "field-ops", {Scope.READ, Scope.ASSETS}).token,
            "customer_a": issue_api_token(settings, "customer-a", {Scope.READ}, sites={customers[0]}).token,
            "customer_b": issue_api_token(settings, "customer-b", {Scope.READ}, sites={customers[1]}).token,
        }
        with serve(settings) as url:
            yield Api(url, settings, fleet, tokens,
                      dict(zip(("telemetry", "control", "simulator"), processes, strict=True)))
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
        _reset(settings)  # later tests on the session stack load fleets of their own
