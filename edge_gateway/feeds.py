"""Kafka topics the gateway reads, as async batch iterators over confluent-kafka consumers.

``commands.site`` is read by one consumer group shared by all instances:
each command is consumed once, by whichever instance owns its partition, which
then delivers it locally or forwards it to the instance holding the site (see
``routing``). ``prices.forecast`` is small and goes to every site of a region,
so every instance reads all of it, from the beginning, without a group: a new
instance learns each region's latest forecast and can hand it to devices as
they connect. ``storm.watch`` is read the same way: each watch names the sites
it reaches.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, TopicPartition

from core import kafka
from core.config import Settings
from core.topics import COMMANDS_SITE, PRICES_FORECAST, STORM_WATCH

T = TypeVar("T")
log = logging.getLogger(__name__)


def next_batch(consumer: Consumer, most: int, wait_s: float) -> list[Message]:
    """Wait up to ``wait_s`` for one message, then take what else is ready, up to ``most``.

    ``Consumer.consume(n, timeout)`` waits for a full batch or the timeout, which
    would add up to ``timeout`` of latency to every command at low traffic.
    """
    first = consumer.poll(wait_s)
    if first is None:
        return []
    return [first, *consumer.consume(most - 1, 0)]


async def uncancellable_in_thread(func: Callable[..., T], *args: Any) -> T:
    """``func(*args)`` in a worker thread; if cancelled, still wait for it before re-raising.

    A cancelled ``asyncio.to_thread`` leaves its thread running; for a consumer's
    poll that would race the ``close`` that follows cancellation.
    """
    running = asyncio.ensure_future(asyncio.to_thread(func, *args))
    try:
        return await asyncio.shield(running)
    except asyncio.CancelledError:
        await running
        raise


class Feed:
    """Batches of good messages from a consumer polled in a worker thread, until ``stop``."""

    def __init__(self, consumer: Consumer, batch: int = 500, wait_s: float = 0.25) -> None:
        self.consumer = consumer
        self.assigned: set[int] = set()
        #: Whether the consumer ever had partitions (a group consumer: whether its join completed).
        self.joined = False
        self._batch = batch
        self._wait_s = wait_s
        self._stopped = False

    async def batches(self) -> AsyncIterator[list[Message]]:
        """Yield each non-empty batch; broker-side errors (e.g. partition EOF) are skipped."""
        while not self._stopped:
            try:
                messages = await uncancellable_in_thread(next_batch, self.consumer, self._batch, self._wait_s)
            except KafkaException as exc:  # e.g. a rebalance callback failing; the consumer recovers
                log.warning("polling %s failed: %s", self.consumer, exc)
                await asyncio.sleep(self._wait_s)
                continue
            good = [m for m in messages if m.error() is None and m.value() is not None]
            if good:
                yield good

    def stop(self) -> None:
        """End ``batches`` after the poll in flight returns."""
        self._stopped = True

    def close(self, timeout_s: float = 10.0) -> None:
        """Leave the group (if any) and release the consumer, waiting at most ``timeout_s``.

        librdkafka's close can wait indefinitely when the group is mid-rebalance;
        a stopping gateway must not, so the close runs in a daemon thread that is
        abandoned (and logged) if it overruns.

        A consumer that never had partitions has read nothing and has nothing to commit; its close
        waits for a group join still pending (4 s on Tansu), so it finishes in the background.
        """
        closer = threading.Thread(target=self.consumer.close, name="feed-close", daemon=True)
        closer.start()
        if not self.joined:
            return
        closer.join(timeout_s)
        if closer.is_alive():
            log.warning("consumer close did not finish within %.0f s; abandoning it", timeout_s)


def start_at_end_unless_committed(consumer: Consumer, partitions: list[TopicPartition]) -> None:
    """An ``on_assign`` step: resume from committed positions, else from the end as of now.

    Resolving "latest" now rather than at the first fetch means a record produced
    after the assignment is never skipped; committed positions (a partition moving
    between instances) win, so a rebalance loses nothing either.
    """
    try:
        positions = consumer.committed(partitions, timeout=10)
        for position in positions:
            if position.offset < 0:
                position.offset = consumer.get_watermark_offsets(position, timeout=10)[1]
    except KafkaException as exc:
        log.warning("cannot resolve start positions (%s); falling back to the reset policy", exc)
        positions = partitions
    consumer.assign(positions)


def commands_feed(settings: Settings, instance_id: str) -> Feed:
    """commands.site through the instances' shared consumer group; a new group starts at the end."""
    consumer = Consumer(kafka.client_config(
        settings, **{"group.id": settings.gateway_consumer_group, "client.id": f"gateway-{instance_id}",
                     "auto.offset.reset": "latest", "enable.auto.commit": True,
                     "session.timeout.ms": 10_000, "heartbeat.interval.ms": 1_000}))
    feed = Feed(consumer)

    def on_assign(consumer: Consumer, partitions: list[TopicPartition]) -> None:
        start_at_end_unless_committed(consumer, partitions)
        feed.assigned = {p.partition for p in partitions}
        feed.joined = True

    def on_revoke(_consumer: Consumer, _partitions: list[TopicPartition]) -> None:
        feed.assigned = set()

    consumer.subscribe([COMMANDS_SITE], on_assign=on_assign, on_revoke=on_revoke)
    return feed


def prices_feed(settings: Settings, instance_id: str) -> Feed:
    """All of prices.forecast from the beginning, assigned directly (no group, no commits)."""
    return _whole_topic_feed(settings, instance_id, PRICES_FORECAST, "prices")


def storms_feed(settings: Settings, instance_id: str) -> Feed:
    """All of storm.watch from the beginning (few, small records), like prices.forecast."""
    return _whole_topic_feed(settings, instance_id, STORM_WATCH, "storms")


def _whole_topic_feed(settings: Settings, instance_id: str, topic: str, name: str) -> Feed:
    consumer = Consumer(kafka.client_config(
        settings, **{"group.id": f"gateway-{name}-{instance_id}", "enable.auto.commit": False}))
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    feed = Feed(consumer)
    feed.assigned = set(partitions)
    feed.joined = True
    return feed
