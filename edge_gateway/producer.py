"""Produce device records without dropping any: when librdkafka's queue is full, the reader waits.

``Producer.produce`` raises BufferError when its local queue is full. Dropping
would lose telemetry silently, so the connection's reader instead polls and
retries; while it waits it reads nothing more from its socket, the WebSocket
receive queue fills, and TCP flow control pushes back on the device. Memory
stays bounded by the producer queue plus ``max_queue`` frames per connection.
Delivery reports are served by a thread of their own, which also times a sample
of records from produce() to acknowledgement by the broker, and keeps what
readiness needs: how many records wait for delivery, how old the oldest of them
is, and for how long no delivery came while some waited
(:meth:`BackpressureProducer.stalled_s`).

A record produced with a ticket (the gateway's: a connection and a frame number,
for a device that asked for acknowledgements) has its outcome handed back to the
event loop, the outcomes of one poll together in one list: one loop wake-up per
poll of the delivery thread, not one per record.

A producer that stays stalled is replaced (:meth:`BackpressureProducer.replace`):
the old one is purged, so every record it held gets a failed delivery report.
That is the accounting that keeps the replacement lossless: a failed report
leaves a hole in the connection's acknowledgements, the gateway closes the
connection, and the device sends again every reading not acknowledged (a record
that did reach the broker before the purge is then there twice, which the
platform counts once, by its sequence number).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
import time
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from confluent_kafka import KafkaError, Message

from edge_gateway.metrics import LATENCY_SAMPLE, GatewayMetrics

T = TypeVar("T")

#: The outcomes of ticketed records: each ticket, and whether its record reached the broker.
Reports = list[tuple[T, bool]]


class ProducerLike(Protocol):
    """The part of confluent_kafka.Producer this module uses."""

    def produce(self, topic: str, value: str | bytes | None = ..., key: str | bytes | None = ..., *,
                on_delivery: Callable[[KafkaError | None, Message], None] | None = ...) -> None: ...
    def poll(self, timeout: float) -> int: ...
    def flush(self, timeout: float) -> int: ...
    def purge(self, in_queue: bool = ..., in_flight: bool = ..., blocking: bool = ...) -> None: ...
    def list_topics(self, topic: str | None = ..., timeout: float = ...) -> object: ...


class BackpressureProducer(Generic[T]):
    """A producer whose ``produce`` awaits room in the queue instead of failing; ``T``: its tickets."""

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
        #: Records not yet reported, by the whole monotonic second they were produced in (oldest first),
        #: and the delivery report of the current second's records (one bound callable per second, not
        #: a closure per record).
        self._by_second: dict[int, int] = {}
        self._report_second: tuple[int, Callable[[KafkaError | None, Message], None]] | None = None
        #: Outcomes of ticketed records not yet handed to the event loop (under the lock), where
        #: they go, and how many successful deliveries were reported (one in LATENCY_SAMPLE is timed).
        self._reports: Reports[T] = []
        self._on_reports: tuple[asyncio.AbstractEventLoop, Callable[[Reports[T]], None]] | None = None
        self._delivered_count = 0
        metrics.undelivered.set_function(lambda: self.outstanding)
        metrics.delivery_stalled.set_function(self.stalled_s)
        metrics.oldest_undelivered.set_function(self.oldest_undelivered_s)

    def start(self, on_reports: Callable[[Reports[T]], None] | None = None) -> None:
        """Start serving delivery reports; ``on_reports`` is called on the running event loop with
        the outcomes of ticketed records, one list per poll of the delivery thread."""
        if on_reports is not None:
            self._on_reports = (asyncio.get_running_loop(), on_reports)
        self._poller = threading.Thread(target=self._poll_forever, name="gateway-delivery", daemon=True)
        self._poller.start()

    def try_produce(self, topic: str, key: bytes, value: bytes, ticket: T | None = None) -> bool:
        """Queue one record if there is room now (the hot path: no coroutine per frame); False if the
        queue is full, and then the caller awaits :meth:`produce`.

        With a ``ticket``, ``(ticket, delivered)`` reaches ``on_reports`` (:meth:`start`) once the
        broker confirmed the record (True) or librdkafka gave up on it (False); without one (a
        device that asked for no acknowledgements) every record of a second shares one callable.
        """
        now = time.monotonic()
        second = int(now)
        if self._report_second is None or self._report_second[0] != second:
            self._report_second = (second, functools.partial(self._delivered, second))
        callback = (self._report_second[1] if ticket is None
                    else functools.partial(self._delivered_ticket, second, ticket))
        with self._lock:
            # Counted before produce(): the report may come on the delivery thread before it returns.
            if self.outstanding == 0:
                self._waiting_since = now
            self.outstanding += 1
            self._by_second[second] = self._by_second.get(second, 0) + 1
        try:
            self._producer.produce(topic, value=value, key=key, on_delivery=callback)
        except BufferError:
            self._forget(second, reported=False)
            return False
        return True

    async def produce(self, topic: str, key: bytes, value: bytes, ticket: T | None = None) -> None:
        """Queue one record; while the queue is full, let deliveries drain and try again."""
        while not self.try_produce(topic, key, value, ticket):
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

    def list_topics(self, timeout: float) -> object:
        """The broker's metadata through the current producer (raises KafkaException when it does not
        answer)."""
        return self._producer.list_topics(timeout=timeout)

    def oldest_undelivered_s(self) -> float:
        """Age of the oldest record with no delivery report yet, to the second (0 while none wait)."""
        with self._lock:
            oldest = next(iter(self._by_second), None)
        return 0.0 if oldest is None else max(0.0, time.monotonic() - oldest)

    def replace(self, producer: ProducerLike) -> ProducerLike:
        """Produce through ``producer`` from now on; returns the old one, for :meth:`retire`.

        Call it on the thread that produces (the event loop), so no record goes to the old one after.
        """
        old, self._producer = self._producer, producer
        self._metrics.producer_replacements.inc()
        return old

    def retire(self, old: ProducerLike, timeout_s: float = 10.0) -> int:
        """Purge a replaced producer and serve its reports: every record it held is reported failed
        (librdkafka's purge), so each connection waiting for one is closed and its device sends the
        reading again. Blocks up to about ``timeout_s`` (call it off the event loop); returns how many
        records were left without a report (0 unless librdkafka kept some past the purge)."""
        old.purge(in_queue=True, in_flight=True, blocking=False)
        left = old.flush(timeout_s)  # serves the purged records' reports
        self._hand_over()
        return left

    def close(self, timeout_s: float = 10.0) -> int:
        """Stop the delivery thread and flush; returns how many records were still undelivered."""
        self._stop.set()
        if self._poller is not None:
            self._poller.join()
        return self._producer.flush(timeout_s)

    def _poll_forever(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.05)
            self._hand_over()

    def _hand_over(self) -> None:
        """Give the event loop the outcomes of ticketed records reported since the last time, at once."""
        with self._lock:
            if not self._reports:
                return
            reports, self._reports = self._reports, []
        if self._on_reports is not None:
            loop, on_reports = self._on_reports
            with contextlib.suppress(RuntimeError):  # the loop closed: the gateway is gone anyway
                loop.call_soon_threadsafe(on_reports, reports)

    def _forget(self, second: int, reported: bool, outcome: tuple[T, bool] | None = None) -> None:
        """One record of ``second`` waits no more: its delivery was ``reported``, or it was never queued;
        a ticketed record's ``outcome`` is kept for the event loop (under the same lock)."""
        with self._lock:
            if outcome is not None:
                self._reports.append(outcome)
            self.outstanding -= 1
            left = self._by_second.get(second, 1) - 1
            if left > 0:
                self._by_second[second] = left
            else:
                self._by_second.pop(second, None)
            if not self.outstanding:
                self._waiting_since = None
            elif reported:
                self._waiting_since = time.monotonic()

    def _delivered(self, second: int, error: KafkaError | None, message: Message,
                   outcome: tuple[T, bool] | None = None) -> None:
        """One delivery report of a record produced in ``second`` (one callable per second, not a
        closure per record: the produce-to-acknowledgement time is librdkafka's own,
        ``Message.latency``)."""
        self._forget(second, True, outcome)
        if error is not None:
            self._metrics.produce_errors.inc()
            return
        self._delivered_count += 1
        if self._delivered_count % LATENCY_SAMPLE == 0:
            latency = message.latency()
            if latency is not None:
                self._metrics.produce_latency.observe(latency)

    def _delivered_ticket(self, second: int, ticket: T, error: KafkaError | None, message: Message) -> None:
        """The delivery report of a ticketed record: as any other, and its outcome kept for the loop."""
        self._delivered(second, error, message, (ticket, error is None))
