"""A Kafka sink that waits for the broker once per epoch, not once per batch.

Bytewax's own ``KafkaSink`` calls ``producer.flush()`` at the end of every
``write_batch``: each batch that holds a Kafka record (a node aggregate, a
status change, a dead letter) stops the worker until the broker has acknowledged
it. This sink hands records to the producer as they come and waits for the
acknowledgements at the end of each epoch (the partition's ``snapshot``), before
Bytewax records the epoch as done: a crash can lose no record of an epoch the
recovery store counts as written, which is the guarantee the per-batch flush
gave. Delivery runs meanwhile on librdkafka's own threads, so records still
leave within ``linger.ms``; only the wait moves.

A record the producer could not deliver fails the flow at that snapshot (Bytewax's
sink drops it silently once ``message.timeout.ms`` has passed), so the epoch is
replayed on restart instead of being counted as written without it.

Being a :class:`~bytewax.outputs.FixedPartitionedSink` (a stateless sink has no
hook at the epoch's end), it takes ``(key, record)`` pairs; the key only chooses
the sink partition, not the Kafka partition (that is the record's own key).
"""

from __future__ import annotations

from typing import Any, cast

from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition
from confluent_kafka import KafkaError, Message, Producer
from typing_extensions import override

from operators.records import KafkaOut

#: How long ``write_batch`` lets librdkafka drain its queue when the queue is full, before trying again.
QUEUE_FULL_WAIT_S = 0.05


class DeliveryError(RuntimeError):
    """The broker did not take a record: the epoch it belongs to must not be counted as written."""


class _EpochKafkaPartition(StatefulSinkPartition[KafkaOut, None]):
    def __init__(self, producer: Producer) -> None:
        self._producer = producer
        self._failure: str | None = None

    def _delivered(self, error: KafkaError | None, message: Message) -> None:
        if error is not None and self._failure is None:
            self._failure = f"{message.topic()}: {error.str()}"

    @override
    def write_batch(self, values: list[KafkaOut]) -> None:
        produce = self._producer.produce
        for record in values:
            if record.topic is None:
                raise ValueError(f"a Kafka record names no topic: {record!r}")
            headers = cast("list[tuple[str, str | bytes | None]]", record.headers)
            while True:
                try:
                    produce(record.topic, value=record.value, key=record.key, headers=headers,
                            timestamp=record.timestamp, on_delivery=self._delivered)
                    break
                except BufferError:  # the local queue is full: let the producer send some
                    self._producer.poll(QUEUE_FULL_WAIT_S)
        self._producer.poll(0)  # serve the delivery reports that are in

    def _settle(self) -> None:
        """Wait until every record handed over so far is acknowledged; raise if one was refused."""
        self._producer.flush()
        if self._failure is not None:
            raise DeliveryError(f"a record could not be delivered ({self._failure}): "
                                 "the epoch is not counted as written")

    @override
    def snapshot(self) -> None:
        self._settle()

    @override
    def close(self) -> None:
        self._settle()


class EpochKafkaSink(FixedPartitionedSink[KafkaOut, None]):
    """Records to the topic each names, acknowledged by the end of each epoch.

    ``partitions``: sink partitions (producers); pairs are routed to them by key, so a key
    of constant value puts every record through one producer.
    """

    def __init__(self, brokers: list[str], partitions: int = 1,
                 add_config: dict[str, Any] | None = None) -> None:
        self._config = {"bootstrap.servers": ",".join(brokers), **(add_config or {})}
        self._partitions = partitions

    @override
    def list_parts(self) -> list[str]:
        return [f"kafka-{i}" for i in range(self._partitions)]

    @override
    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _EpochKafkaPartition:
        return _EpochKafkaPartition(Producer(self._config))
