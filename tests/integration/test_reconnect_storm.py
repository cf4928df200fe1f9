"""A reconnect storm: 2,000 devices dropped at once come back within 60 s, inside the handshake budget.

The gateway runs as a process of its own with its default handshake budget of 200; 2,000
simulated devices (the reference client: exponential backoff with full jitter,
store-and-forward) connect, then the gateway is SIGKILLed and started again, so
every device is dropped at the same instant. All must be connected again within
60 s, the gateway must never have authenticated more than its budget at once
(it refuses the rest at once with 1013), and afterwards a Redis that answers
nothing for 10 s (SIGSTOP) must not close a single established connection.

Slow (a couple of minutes): ``pytest -m slow tests/integration/test_reconnect_storm.py``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from core.config import Settings
from tests.conftest import free_port
from vpp.dataflows import settings_env
from vpp.stack import Stack

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]

DEVICES = 2000
BUDGET = 200


def _health(settings: Settings) -> dict[str, Any] | None:
    url = f"http://127.0.0.1:{settings.gateway_metrics_port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return dict(json.loads(response.read()))
    except urllib.error.HTTPError as error:
        return dict(json.loads(error.read()))
    except (urllib.error.URLError, OSError, TimeoutError):
        return None


def _connections(settings: Settings) -> int:
    health = _health(settings)
    return int(health["connections"]) if health else 0


def _wait(condition: Any, timeout_s: float) -> float | None:
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if condition():
            return time.monotonic() - start
        time.sleep(0.5)
    return None


Gateway = tuple[Settings, list[subprocess.Popen[bytes]]]


@pytest.fixture
def gateway(stack_settings: Settings, tmp_path: Any) -> Iterator[Gateway]:
    settings = stack_settings.model_copy(update={
        "gateway_port": free_port(), "gateway_metrics_port": free_port(), "gateway_max_handshakes": BUDGET,
        "gateway_consumer_group": f"storm-{time.time_ns()}"})
    argv = [sys.executable, "-m", "edge_gateway", "--host", "127.0.0.1", "--port", str(settings.gateway_port),
            "--metrics-port", str(settings.gateway_metrics_port), "--instance-id", "storm"]
    env = {**os.environ, **settings_env(settings)}
    log = (tmp_path / "gateway.log").open("ab")
    processes = [subprocess.Popen(argv, env=env, stdout=log, stderr=log)]
    try:
        yield settings, processes
    finally:
        for process in processes:
            process.kill()
            process.wait(30)


def test_two_thousand_dropped_devices_reconnect_within_a_minute_inside_the_budget(
        gateway: Gateway, tmp_path: Any) -> None:
    settings, processes = gateway
    env = {**os.environ, **settings_env(settings)}
    # The fleet in a process of its own, as devices are: the gateway's answers are what is measured.
    fleet = subprocess.Popen(
        [sys.executable, "-m", "edge_gateway.simulate", "--sites", str(DEVICES), "--seed", "7",
         "--interval", "5", "--speed", "1", "--url", f"ws://127.0.0.1:{settings.gateway_port}"],
        env=env, stdout=(tmp_path / "fleet.log").open("ab"), stderr=subprocess.STDOUT)
    try:
        connected = _wait(lambda: _connections(settings) == DEVICES, 300)
        assert connected is not None, f"the fleet never connected ({_connections(settings)})"

        processes[0].kill()  # every device dropped at the same instant
        processes[0].wait(30)
        dropped = time.monotonic()
        log = (tmp_path / "gateway.log").open("ab")
        processes.append(subprocess.Popen(processes[0].args, env=env, stdout=log, stderr=log))
        back = _wait(lambda: _connections(settings) == DEVICES, 120)
        assert back is not None, f"only {_connections(settings)} of {DEVICES} came back"
        took = time.monotonic() - dropped
        assert took <= 60.0, f"the storm took {took:.0f} s (the first connect {connected:.0f} s)"
        health = _health(settings)
        assert health is not None and 0 < int(health["handshaking_peak"]) <= BUDGET, health

        redis = Stack(settings).pids.running("redis")
        assert redis is not None
        os.kill(redis.pid, signal.SIGSTOP)
        try:
            lowest = DEVICES
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                lowest = min(lowest, _connections(settings))
                time.sleep(0.5)
        finally:
            os.kill(redis.pid, signal.SIGCONT)
        time.sleep(5)  # anything the pause would have closed is closed by now
        lowest = min(lowest, _connections(settings))
        assert lowest == DEVICES, f"{DEVICES - lowest} established connections closed while Redis was slow"
    finally:
        fleet.kill()
        fleet.wait(30)
