"""A producer that stalls is noticed and replaced, and the replacement loses no reading.

The broker is paused (SIGSTOP) past ``gateway_producer_replace_s`` with a
reading waiting: the queue depth and the age of the oldest undelivered record
show on the metrics, the gateway replaces its producer, the old one's record is
reported failed (a produce error), so the connection that sent it is closed
(1011) without an acknowledgement for it, and the gateway stays not ready until
the new producer reaches the broker. The device sends the reading again on a
new connection and this time it is confirmed and on ``telemetry.raw``.

Before, the gateway only said it was not ready: a wedged producer stayed wedged.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import uuid

import pytest
from websockets import ConnectionClosed
from websockets.asyncio.client import ClientConnection

from core.config import Settings
from core.device_tokens import issue_token
from core.topics import TELEMETRY_RAW
from edge_gateway.wire import json_frame
from tests.edge_gateway.support import (
    TopicTail,
    acking_device,
    delivered,
    eventually,
    gateway_settings,
    running_gateway,
    telemetry,
)

pytestmark = pytest.mark.integration



async def _close_code(ws: ClientConnection, timeout_s: float = 60.0) -> int | None:
    """Read (and drop) frames until the gateway closes the connection; its close code."""
    async with asyncio.timeout(timeout_s):
        try:
            while True:
                await ws.recv()
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd is not None else None


def test_a_stalled_producer_is_replaced_and_its_readings_are_sent_again(
        own_broker: tuple[Settings, subprocess.Popen[bytes]]) -> None:
    broker_settings, broker = own_broker
    settings = gateway_settings(broker_settings, gateway_produce_stall_s=1.0, gateway_producer_replace_s=5.0)
    site = f"site-replace-{uuid.uuid4().hex[:8]}"
    token = issue_token(settings, site).token
    tail = TopicTail(settings, TELEMETRY_RAW)

    async def scenario() -> None:
        async with running_gateway(settings) as gateway:
            metric = gateway.metrics.value
            async with acking_device(gateway, token) as ws:
                await ws.send(json_frame("telemetry", telemetry(site, seq=1)))
                await delivered(ws, 1)
                os.kill(broker.pid, signal.SIGSTOP)
                try:
                    await ws.send(json_frame("telemetry", telemetry(site, seq=2)))
                    await eventually(lambda: metric("vpp_gateway_oldest_undelivered_seconds") >= 1, 60)
                    assert metric("vpp_gateway_undelivered_records") == 1
                    assert await _close_code(ws) == 1011, "the connection holding the purged reading closed"
                    assert metric("vpp_gateway_producer_replacements_total") == 1
                    assert metric("vpp_gateway_produce_errors_total") == 1, "the held reading was failed"
                    assert gateway._producer.outstanding == 0
                    assert metric("vpp_gateway_oldest_undelivered_seconds") == 0
                    ready, detail = gateway._healthz()
                    assert not ready and "replaced" in str(detail["status"]), detail
                finally:
                    os.kill(broker.pid, signal.SIGCONT)
            await eventually(lambda: gateway._healthz()[0], 120)
            async with acking_device(gateway, token) as ws:  # the device sends what was not confirmed
                await ws.send(json_frame("telemetry", telemetry(site, seq=2)))
                await delivered(ws, 1)
            assert metric("vpp_gateway_producer_replacements_total") == 1

    try:
        asyncio.run(scenario())
        records = tail.collect(lambda rs: {r["seq"] for k, r in rs if k == site} >= {1, 2}, 60)
        assert {r["seq"] for k, r in records if k == site} == {1, 2}
    finally:
        tail.close()
