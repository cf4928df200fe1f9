"""Read positions committed to a consumer group for Kafka lag tools, without ever stalling the flow.

A dataflow resumes from its Bytewax recovery store, which no lag tool reads;
committing the same positions to a consumer group lets ``kafka-consumer-groups
--describe``, Burrow or kafka-lag-exporter show how far each flow has read.

The commits go through the admin API (``alter_consumer_group_offsets``, an
OffsetCommit for a group without members), not ``Consumer.commit``: closing a
consumer waits for its commits in flight, so with the broker gone a flow's
shutdown stalled about 45 s per partition. An admin request times out on its
own (``timeout_s``), nobody waits for it but :meth:`GroupCommitter.settle`
(bounded, and skipped while commits fail), and it is dropped with its client.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future
from typing import Any

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

log = logging.getLogger(__name__)


class GroupCommitter:
    """Commits ``(topic, partition, offset)`` positions to ``group``; thread-safe, never raises."""

    def __init__(self, config: dict[str, Any], group: str, timeout_s: float = 5.0) -> None:
        self._admin = AdminClient(config)
        self.group = group
        self._timeout_s = timeout_s
        self._lock = threading.Lock()
        self._failing = False

    def commit(self, topic: str, partition: int, offset: int) -> Future[object] | None:
        """Send the position; the answer is only logged (one line when commits start or stop failing)."""
        self._admin.poll(0)  # serves the admin client's own log lines (core.kafka.library_logs)
        request = ConsumerGroupTopicPartitions(self.group, [TopicPartition(topic, partition, offset)])
        try:
            future = self._admin.alter_consumer_group_offsets([request], request_timeout=self._timeout_s)
        except KafkaException as exc:
            self._outcome(str(exc))
            return None
        sent: Future[object] = future[self.group]
        sent.add_done_callback(self._done)
        return sent

    def settle(self, sent: Future[object] | None) -> None:
        """Wait (at most the request timeout) for a last commit, unless commits are failing anyway."""
        if sent is not None and not self._failing:
            try:
                sent.result(timeout=self._timeout_s)
            except Exception:  # the outcome is logged by _done; a closing partition must not fail
                log.debug("the last commit to %s did not settle", self.group)

    def _done(self, sent: Future[object]) -> None:
        error = sent.exception()
        if error is None:
            answer = sent.result()
            failed = [tp for tp in getattr(answer, "topic_partitions", []) if tp.error is not None]
            self._outcome(failed[0].error.str() if failed else None)
        else:
            self._outcome(str(error))

    def _outcome(self, error: str | None) -> None:
        with self._lock:
            if error is not None and not self._failing:
                self._failing = True
                log.warning("cannot commit read positions to the consumer group %s (%s): lag tools see "
                            "old offsets until it works again", self.group, error)
            elif error is None and self._failing:
                self._failing = False
                log.info("committing read positions to the consumer group %s works again", self.group)
