"""Kafka clients configured from settings, and topic provisioning.

Topics come from the catalogue in :mod:`core.topics`; partition counts from
``VPP_DEFAULT_PARTITIONS`` / ``VPP_TOPIC_PARTITIONS``. Provisioning is
idempotent: an existing topic is left as it is (and reported), so ``vpp stack
up`` can run against a cluster that is already provisioned.
"""

from __future__ import annotations

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


def client_config(settings: Settings, **extra: Any) -> dict[str, Any]:
    """The librdkafka config every client of the platform starts from."""
    return {"bootstrap.servers": settings.kafka, **extra}


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
