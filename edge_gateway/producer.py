"""Produce device records without dropping any: when librdkafka's queue is full, the reader waits.

``Producer.produce`` raises BufferError when its local queue is full. Dropping
would lose telemetry silently, so the connection's reader instead polls and
retries; while it waits it reads nothing more from its socket, the WebSocket
receive queue fills, and TCP flow control pushes back on the device. Memory
stays bounded by the producer queue plus ``max_queue`` frames per connection.
Delivery reports are served by a thread of their own, which also times each
record from produce() to acknowledgement by the broker, and keeps what readiness
needs: how many records wait for delivery and for how long no delivery came
while some waited (:meth:`BackpressureProducer.stalled_s`).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Protocol

from confluent_kafka import KafkaError, Message

from edge_gateway.metrics import GatewayMetrics


class ProducerLike(Protocol):
    """The part of confluent_kafka.Producer this module uses."""

    def produce(self, topic: str, value: str | bytes | None = ..., key: str | bytes | None = ..., *,
                on_delivery: Callable[[KafkaError | None, Message], None] | None = ...) -> None: ...
    def poll(self, timeout: float) -> int: ...
    def flush(self, timeout: float) -> int: ...


class BackpressureProducer:
    """A producer whose ``produce`` awaits room in the queue instead of failing."""

    def __init__(self, producer: ProducerLike, metrics: GatewayMetrics, retry_s: float = 0.005) -> None:
        self._producer = producer
        self._metrics = metrics
        self._retry_s = retry_s
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None
        self._lock = threading.Lock()
        #: Records produced and not yet reported delivered (or failed).
        self.outstanding = 0
        #: Since when records have waited with no delivery report (monotonic); None while none wait.
        self._waiting_since: float | None = None
        metrics.undelivered.set_function(lambda: self.outstanding)
        metrics.delivery_stalled.set_function(self.stalled_s)

    def start(self) -> None:
        """Start serving delivery reports."""
        self._poller = threading.Thread(target=self._poll_forever, name="gateway-delivery", daemon=True)
        self._poller.start()

    def try_produce(self, topic: str, key: bytes, value: bytes,
                    on_done: Callable[[bool], None] | None = None) -> bool:
        """Queue one record if there is room now (the hot path: no coroutine per frame); False if the
        queue is full, and then the caller awaits :meth:`produce`.

        ``on_done(delivered)`` is called from the delivery thread once the broker confirmed the
        record (True) or librdkafka gave up on it (False); without it (a device that asked for no
        acknowledgements) every record shares one bound method, no closure per record.
        """
        callback = self._delivered if on_done is None else self._reporting(on_done)
        try:
            self._producer.produce(topic, value=value, key=key, on_delivery=callback)
        except BufferError:
            return False
        with self._lock:
            if self.outstanding == 0:
                self._waiting_since = time.monotonic()
            self.outstanding += 1
        return True

    async def produce(self, topic: str, key: bytes, value: bytes,
                      on_done: Callable[[bool], None] | None = None) -> None:
        """Queue one record; while the queue is full, let deliveries drain and try again."""
        while not self.try_produce(topic, key, value, on_done):
            self._metrics.backpressure_waits.inc()
            await asyncio.sleep(self._retry_s)

    def stalled_s(self) -> float:
        """Seconds records have waited with no delivery report at all (0 while none wait).

        A broker that stopped accepting records shows here long before librdkafka's message
        timeout turns them into delivery errors.
        """
        with self._lock:
            since = self._waiting_since
        return 0.0 if since is None else time.monotonic() - since

    def close(self, timeout_s: float = 10.0) -> int:
        """Stop the delivery thread and flush; returns how many records were still undelivered."""
        self._stop.set()
        if self._poller is not None:
            self._poller.join()
        return self._producer.flush(timeout_s)

    def _poll_forever(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.05)

    def _delivered(self, error: KafkaError | None, message: Message) -> None:
        """One delivery report (one bound method for every record, not a closure per record: the
        produce-to-acknowledgement time is librdkafka's own, ``Message.latency``)."""
        with self._lock:
            self.outstanding -= 1
            self._waiting_since = time.monotonic() if self.outstanding else None
        if error is not None:
            self._metrics.produce_errors.inc()
            return
        latency = message.latency()
        if latency is not None:
            self._metrics.produce_latency.observe(latency)

    def _reporting(self, on_done: Callable[[bool], None]) -> Callable[[KafkaError | None, Message], None]:
        """A delivery report that also tells ``on_done`` whether the record reached the broker."""

        def delivered(error: KafkaError | None, message: Message) -> None:
            self._delivered(error, message)
            on_done(error is None)

        return delivered
