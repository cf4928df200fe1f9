"""A real telemetry dataflow process serves /livez and /readyz on its probe port: ready once it reads
its input, not ready while its broker is paused (SIGSTOP), ready again after, alive throughout.

Before, no dataflow had a probe: nothing answered on VPP_TELEMETRY_PROBE_PORT.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from core.config import Settings
from core.waiting import wait_until
from vpp.dataflows import dataflow_argv, settings_env

pytestmark = pytest.mark.integration


def _probe(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return int(response.status), str(json.loads(response.read())["status"])
    except urllib.error.HTTPError as exc:
        return exc.code, str(json.loads(exc.read())["status"])
    except OSError as exc:
        return 0, str(exc)


def test_readiness_follows_the_broker_and_liveness_stays(
        own_broker: tuple[Settings, subprocess.Popen[bytes]], tmp_path: Path) -> None:
    settings, broker = own_broker
    port = settings.telemetry_probe_port
    log_path = tmp_path / "telemetry.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(dataflow_argv("telemetry", settings),
                                   env={**os.environ, **settings_env(settings)}, stdout=log, stderr=log)
    try:
        def answers(status: int) -> bool:
            assert process.poll() is None, log_path.read_text()
            return _probe(port, "/readyz")[0] == status

        assert wait_until(lambda: answers(200), 120), f"never ready: {_probe(port, '/readyz')}"
        assert _probe(port, "/livez")[0] == 200
        os.kill(broker.pid, signal.SIGSTOP)
        try:
            assert wait_until(lambda: answers(503), 60), "a paused broker makes the flow not ready"
            assert "kafka unreachable" in _probe(port, "/readyz")[1]
            assert _probe(port, "/livez")[0] == 200, "a broker away is no reason to restart the flow"
        finally:
            os.kill(broker.pid, signal.SIGCONT)
        assert wait_until(lambda: answers(200), 120), f"not ready again: {_probe(port, '/readyz')}"
    finally:
        process.terminate()
        process.wait(timeout=60)
