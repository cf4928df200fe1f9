"""Helpers for the gateway's integration tests: in-process gateways, device clients, topic tails."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from websockets import ConnectionClosed
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

from core import kafka
from core.config import Settings
from edge_gateway.acks import ACKS_HEADER
from edge_gateway.server import Gateway
from edge_gateway.wire import Encoding
from schemas import packaged_codec


def gateway_settings(stack_settings: Settings, **overrides: Any) -> Settings:
    """The stack's settings with a consumer group of this test's own and a fast heartbeat."""
    values: dict[str, Any] = {"gateway_consumer_group": f"gateway-test-{uuid.uuid4().hex[:8]}",
                              "gateway_heartbeat_s": 0.5}
    values.update(overrides)
    return stack_settings.model_copy(update=values)


@asynccontextmanager
async def running_gateway(settings: Settings, instance_id: str | None = None) -> AsyncIterator[Gateway]:
    """A started gateway on free ports, stopped afterwards."""
    gateway = Gateway(settings, host="127.0.0.1", port=0, metrics_port=0,
                      instance_id=instance_id or f"test-{uuid.uuid4().hex[:8]}")
    await gateway.start()
    try:
        yield gateway
    finally:
        await gateway.stop()


def device(gateway: Gateway, token: str | None, encoding: Encoding = Encoding.JSON,
           query_token: bool = False) -> Any:
    """Connect as a device: the token as a bearer header (or in the query), offering ``encoding``."""
    url = f"ws://127.0.0.1:{gateway.port}/"
    headers = {}
    if token is not None and query_token:
        url += f"?token={token}"
    elif token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return connect(url, additional_headers=headers, subprotocols=[Subprotocol(encoding.subprotocol)])


async def eventually(condition: Callable[[], bool], timeout_s: float = 30.0) -> None:
    """Wait until ``condition()`` holds; fail after ``timeout_s`` (a safety net, not a measurement)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


async def next_frame(ws: ClientConnection, timeout_s: float = 30.0) -> bytes | str:
    """The next frame the gateway sends."""
    return await asyncio.wait_for(ws.recv(), timeout_s)


def telemetry(site_id: str, seq: int = 1, **changes: Any) -> dict[str, Any]:
    """A valid SiteTelemetry record."""
    record: dict[str, Any] = {
        "site_id": site_id, "seq": seq, "event_time": datetime.now(UTC).replace(microsecond=0),
        "received_time": None, "soc_pct": 55.0, "battery_kw": 1.0, "solar_kw": 2.0, "load_kw": 0.8,
        "grid_kw": -2.2, "battery_temp_c": None, "mode": "SELF_CONSUMPTION", "active_command_id": None,
        "firmware": "test",
    }
    record.update(changes)
    return record


class TopicTail:
    """Reads a topic from where it ends at creation, so a test sees only what happened after."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.topic = topic
        self.codec = packaged_codec()
        self._consumer = Consumer(kafka.client_config(
            settings, **{"group.id": f"tail-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False}))
        partitions = self._consumer.list_topics(topic, timeout=10).topics[topic].partitions
        starts = []
        for p in partitions:
            _low, high = self._consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            starts.append(TopicPartition(topic, p, high))
        self._consumer.assign(starts)
        self.records: list[tuple[str, dict[str, Any]]] = []

    def collect(self, done: Callable[[list[tuple[str, dict[str, Any]]]], bool],
                timeout_s: float = 30.0) -> list[tuple[str, dict[str, Any]]]:
        """Read (key, decoded value) pairs until ``done(records so far)``; fail after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while not done(self.records):
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.topic}: condition not reached; read {self.records!r}")
            for message in self._consumer.consume(500, 0.2):
                key, value = message.key(), message.value()
                if message.error() is None and key is not None and value is not None:
                    self.records.append((key.decode(), self.codec.decode(value)))
        return self.records

    def close(self) -> None:
        """Release the consumer."""
        self._consumer.close()


def close_of(closed: ConnectionClosed) -> tuple[int | None, str | None]:
    """The close code and reason the gateway sent, as the device saw them."""
    return (closed.rcvd.code, closed.rcvd.reason) if closed.rcvd is not None else (None, None)


def acking_device(gateway: Gateway, token: str) -> connect:
    """A JSON device connection that asks for delivery confirmations (X-VPP-Acks)."""
    return connect(f"ws://127.0.0.1:{gateway.port}/", subprotocols=[Subprotocol(Encoding.JSON.subprotocol)],
                   additional_headers={"Authorization": f"Bearer {token}", ACKS_HEADER: "1"})


async def delivered(ws: ClientConnection, count: int, timeout_s: float = 60.0) -> None:
    """Read frames until the gateway has confirmed ``count`` frames."""
    async with asyncio.timeout(timeout_s):
        while True:
            frame = json.loads(await ws.recv())
            if frame["type"] == "delivered" and frame["count"] >= count:
                return
