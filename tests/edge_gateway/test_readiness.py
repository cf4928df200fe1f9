"""Probes that tell the truth: /livez asks nothing of the dependencies, /readyz fails while Kafka stalls.

The gateway here produces to a broker of the test's own, which is paused
(SIGSTOP) after the device connected: records wait with no delivery report, and
after ``gateway_produce_stall_s`` the gateway says it is not ready, while
``/livez`` keeps answering (a kubelet must not restart it for a dependency's
blip). When the broker runs again the records are delivered and it is ready.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import urllib.error
import urllib.request
import uuid

import pytest

from core.config import Settings
from core.device_tokens import issue_token
from edge_gateway.wire import json_frame
from tests.edge_gateway.support import device, eventually, gateway_settings, running_gateway, telemetry

pytestmark = pytest.mark.integration




def _probe(port: int, path: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_readiness_fails_while_kafka_stalls_and_liveness_does_not(
        own_broker: tuple[Settings, subprocess.Popen[bytes]]) -> None:
    broker_settings, broker = own_broker
    settings = gateway_settings(broker_settings, gateway_produce_stall_s=1.0)
    site = f"site-ready-{uuid.uuid4().hex[:8]}"
    token = issue_token(settings, site).token

    async def scenario() -> list[tuple[int, dict[str, object]]]:
        seen: list[tuple[int, dict[str, object]]] = []

        async def probe(path: str) -> tuple[int, dict[str, object]]:
            seen.append(await asyncio.to_thread(_probe, gateway.metrics_port, path))
            return seen[-1]

        async with running_gateway(settings) as gateway, device(gateway, token) as ws:
            await ws.send(json_frame("telemetry", telemetry(site, seq=1)))
            await eventually(lambda: gateway._producer.outstanding == 0, 60)
            assert (await probe("/readyz"))[0] == 200
            os.kill(broker.pid, signal.SIGSTOP)
            try:
                await ws.send(json_frame("telemetry", telemetry(site, seq=2)))
                for _ in range(600):
                    if (await probe("/readyz"))[0] == 503:
                        break
                    await asyncio.sleep(0.1)
                assert (await probe("/livez"))[0] == 200
                assert gateway.metrics.value("vpp_gateway_undelivered_records") >= 1
                assert gateway.metrics.value("vpp_gateway_delivery_stalled_seconds") > 0
            finally:
                os.kill(broker.pid, signal.SIGCONT)
            for _ in range(600):
                if (await probe("/readyz"))[0] == 200:
                    break
                await asyncio.sleep(0.1)
        return seen

    seen = asyncio.run(scenario())
    statuses = [status for status, _ in seen]
    stalled = [body for status, body in seen if status == 503]
    assert stalled, f"readiness never reported the stalled broker: {seen[-3:]}"
    assert "kafka delivered nothing" in str(stalled[0]["status"])
    assert seen[-1][0] == 200, "ready again once the broker delivers"
    assert 200 in statuses[statuses.index(503):]
