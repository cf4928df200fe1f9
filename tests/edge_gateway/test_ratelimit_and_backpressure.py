"""The per-connection token bucket, and a full producer queue making the reader wait instead of dropping."""

from __future__ import annotations

import asyncio
from typing import Any

from edge_gateway.metrics import GatewayMetrics
from edge_gateway.producer import BackpressureProducer
from edge_gateway.ratelimit import TokenBucket


def test_the_bucket_allows_a_burst_then_the_sustained_rate() -> None:
    bucket = TokenBucket(rate=2.0, burst=3.0, now=0.0)
    assert [bucket.allow(0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.allow(0.5) and not bucket.allow(0.5)  # half a second refills one token
    assert [bucket.allow(100.0) for _ in range(4)] == [True, True, True, False]  # never above the burst


class FullQueueProducer:
    """Raises BufferError for the first ``full_for`` calls, like librdkafka with a full local queue."""

    def __init__(self, full_for: int) -> None:
        self.full_for = full_for
        self.produced: list[tuple[str, bytes, bytes]] = []

    def produce(self, topic: str, value: Any = None, key: Any = None, *, on_delivery: Any = None) -> None:
        if self.full_for > 0:
            self.full_for -= 1
            raise BufferError("Local: Queue full")
        self.produced.append((topic, key, value))

    def poll(self, timeout: float) -> int:
        return 0

    def flush(self, timeout: float) -> int:
        return 0

    def purge(self, in_queue: bool = True, in_flight: bool = True, blocking: bool = True) -> None:
        pass

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> object:
        return None


def test_a_full_queue_makes_produce_wait_and_retry_rather_than_drop() -> None:
    fake, metrics = FullQueueProducer(full_for=5), GatewayMetrics()
    producer: BackpressureProducer[None] = BackpressureProducer(fake, metrics, retry_s=0.0)
    asyncio.run(producer.produce("telemetry.raw", b"site-1", b"value"))
    assert fake.produced == [("telemetry.raw", b"site-1", b"value")]
    assert metrics.value("vpp_gateway_backpressure_waits_total") == 5
