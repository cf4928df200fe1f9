"""One Kafka reader per API process, fanned out to every open stream.

``aggregates.live`` (node updates) and ``twin.status`` (site status changes)
are read from their ends by a single assign-mode consumer on a thread, decoded
once, and handed to each subscriber whose filter matches, so a hundred open
dashboards cost one consumer, not a hundred. The reader starts with the first
subscriber. A subscriber that does not keep up loses events rather than
growing memory: its queue is bounded and a live view only needs the newest.

Each event gets an id, ``{hub}-{sequence}`` (the hub is this process's reader,
named at random when it starts), and the hub keeps the last :data:`REPLAY`
events, so a stream reconnecting with ``Last-Event-ID`` gets what it missed
(those of them its filter wants) before the live events. An id of another hub
(the API restarted, or another replica answered) or one older than the kept
events cannot be resumed: the stream then starts with a ``gap`` event saying
so, and the client should re-read the current state (``GET /v1/nodes/...``).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import threading
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from confluent_kafka import OFFSET_END, Consumer, TopicPartition
from prometheus_client import Counter, Gauge

from core import kafka
from core.config import Settings
from core.topics import AGGREGATES_LIVE, TWIN_STATUS
from schemas import DecodeError, packaged_codec
from schemas.times import epoch_ms

QUEUE_SIZE = 1000
#: Events kept for streams that reconnect with Last-Event-ID.
REPLAY = 10_000
STREAMS = Gauge("vpp_api_streams", "Open event streams of this API process.")
DROPPED = Counter("vpp_api_stream_dropped_total", "Events a stream's reader was too slow to take.")
_INTERNAL = frozenset({"seq"})


@dataclass(eq=False)
class Subscription:
    """What one stream wants (None: everything of that kind; empty: nothing) and where it goes."""

    nodes: frozenset[str] | None
    sites: frozenset[str] | None
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[dict[str, Any]] = field(default_factory=lambda: asyncio.Queue(QUEUE_SIZE))

    def wants(self, event: dict[str, Any]) -> bool:
        """True if the event's node or site passes this subscription's filter."""
        wanted, key = (self.nodes, "node_id") if event["type"] == "node" else (self.sites, "site_id")
        return wanted is None or event["data"][key] in wanted

    def offer(self, event: dict[str, Any]) -> None:
        """Called on the loop: enqueue, or drop when the reader is behind."""
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            DROPPED.inc()


def to_event(topic: str, record: dict[str, Any]) -> dict[str, Any]:
    """A decoded record as a stream event: times as epoch milliseconds, internal fields dropped."""
    data = {k: (epoch_ms(v) if isinstance(v, datetime) else v)
            for k, v in record.items() if k not in _INTERNAL}
    return {"type": "node" if topic == AGGREGATES_LIVE else "site_status", "data": data}


class StreamHub:
    """The shared reader and its subscribers."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._subscribers: set[Subscription] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.instance = secrets.token_hex(4)
        self._sequence = 0
        self._recent: deque[tuple[int, dict[str, Any]]] = deque(maxlen=REPLAY)

    def subscribe(self, nodes: frozenset[str] | None, sites: frozenset[str] | None,
                  last_event_id: str | None = None) -> Subscription:
        """Register a stream on the running loop; the reader starts if it was not running.

        With ``last_event_id``, the kept events after it that the stream wants are queued first, or a
        ``gap`` event when they cannot be known.
        """
        subscription = Subscription(nodes, sites, asyncio.get_running_loop())
        with self._lock:
            if last_event_id:
                for event in self._missed(last_event_id):
                    if event["type"] == "gap" or subscription.wants(event):
                        subscription.offer(event)
            self._subscribers.add(subscription)
            STREAMS.set(len(self._subscribers))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="stream-hub", daemon=True)
                self._thread.start()
        return subscription

    def _missed(self, last_event_id: str) -> list[dict[str, Any]]:
        """The kept events after ``last_event_id`` (under the lock), or one ``gap`` event."""
        hub, _, number = last_event_id.strip().rpartition("-")
        first = self._recent[0][0] if self._recent else self._sequence + 1
        if hub == self.instance and number.isdigit() and int(number) >= first - 1:
            return [event for sequence, event in self._recent if sequence > int(number)]
        why = ("the events after it are no longer kept" if hub == self.instance
               else "it is not an id of this API process (restarted, or another replica)")
        return [{"type": "gap", "id": f"{self.instance}-{self._sequence}",
                 "data": {"last_event_id": last_event_id, "detail": f"cannot resume after {last_event_id!r}: "
                          f"{why}; re-read the current state"}}]

    def unsubscribe(self, subscription: Subscription) -> None:
        """Forget a closed stream."""
        with self._lock:
            self._subscribers.discard(subscription)
            STREAMS.set(len(self._subscribers))

    def stop(self) -> None:
        """Stop the reader (at shutdown)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        codec = packaged_codec()
        consumer = Consumer(kafka.client_config(self.settings, **{
            "group.id": "vpp-api-stream", "enable.auto.commit": False}))
        try:
            assignment = []
            for topic in (AGGREGATES_LIVE, TWIN_STATUS):
                partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
                assignment += [TopicPartition(topic, p, OFFSET_END) for p in partitions]
            consumer.assign(assignment)
            while not self._stop.is_set():
                for message in consumer.consume(500, timeout=0.2):
                    value = message.value()
                    if message.error() or value is None:
                        continue
                    try:
                        event = to_event(str(message.topic()), codec.decode(value))
                    except DecodeError:
                        continue  # the dataflows dead-letter bad input; a viewer just skips it
                    self._publish(event)
        finally:
            consumer.close()

    def _publish(self, event: dict[str, Any]) -> None:
        with self._lock:
            self._sequence += 1
            event = {**event, "id": f"{self.instance}-{self._sequence}"}
            self._recent.append((self._sequence, event))
            targets = [s for s in self._subscribers if s.wants(event)]
        for subscription in targets:
            with contextlib.suppress(RuntimeError):  # its loop closed while we held the event
                subscription.loop.call_soon_threadsafe(subscription.offer, event)
