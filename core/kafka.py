"""Kafka clients configured from settings, and topic provisioning.

Topics come from the catalogue in :mod:`core.topics`; partition counts from
``VPP_DEFAULT_PARTITIONS`` / ``VPP_TOPIC_PARTITIONS``. Provisioning is
idempotent: an existing topic is left as it is (and reported), so ``vpp stack
up`` can run against a cluster that is already provisioned.

librdkafka's own log lines (``%3|...|FAIL|...``: a broker it cannot reach, a
failed request) would go straight to stderr, past ``VPP_LOG_FORMAT``: every
client made here hands them to the Python logger :data:`LIBRDKAFKA_LOGGER`
instead (the ``logger`` config key), so they are one line in the process's
format like any other (see :mod:`core.logs`). confluent-kafka delivers them
when the client is polled, which every client of the platform does.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from core.config import Settings
from core.topics import TOPICS, TopicSpec


@dataclass(frozen=True)
class TopicState:
    """A topic after provisioning: how many partitions it has and whether we made it now."""

    name: str
    partitions: int
    created: bool


#: The Python logger librdkafka's log lines go to (level from its syslog level, message
#: ``FACILITY [client] text``).
LIBRDKAFKA_LOGGER = "vpp.kafka.librdkafka"


def library_logs() -> dict[str, Any]:
    """The config entry that routes librdkafka's log lines through Python logging."""
    return {"logger": logging.getLogger(LIBRDKAFKA_LOGGER)}


def client_config(settings: Settings, **extra: Any) -> dict[str, Any]:
    """The librdkafka config every client of the platform starts from (its logs in our format)."""
    return {"bootstrap.servers": settings.kafka, **library_logs(), **extra}


def admin(settings: Settings) -> AdminClient:
    """An admin client for the configured cluster."""
    return AdminClient(client_config(settings))


def ensure_topics(settings: Settings, topics: tuple[TopicSpec, ...] = TOPICS,
                  timeout_s: float = 15.0) -> list[TopicState]:
    """Create every topic that is missing; report each topic's partition count."""
    client = admin(settings)
    existing = client.list_topics(timeout=timeout_s).topics
    missing = [spec for spec in topics if spec.name not in existing]
    created: set[str] = set()
    if missing:
        futures = client.create_topics(
            [
                NewTopic(
                    spec.name,
                    num_partitions=settings.partitions_of(spec.name),
                    replication_factor=settings.replication_factor,
                    config=spec.topic_configs(),
                )
                for spec in missing
            ],
            operation_timeout=timeout_s,
            request_timeout=timeout_s,
        )
        for name, future in futures.items():
            try:
                future.result()
                created.add(name)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise
    metadata = client.list_topics(timeout=timeout_s).topics
    return [
        TopicState(spec.name, len(metadata[spec.name].partitions), spec.name in created)
        for spec in topics
        if spec.name in metadata
    ]
