"""Kafka clients configured from settings, and topic provisioning.

Topics come from the catalogue in :mod:`core.topics`; partition counts from
``VPP_DEFAULT_PARTITIONS`` / ``VPP_TOPIC_PARTITIONS``. Provisioning is
idempotent, so ``vpp stack up`` can run against a cluster that is already
provisioned: a missing topic is created; an existing one has each config the
catalogue declares (retention, segment roll, compaction) brought to the
declared value with an incremental alter, so a cluster provisioned by an older
version (before topics had a retention) stops keeping everything. Configs the
catalogue does not declare are left alone, and partitions are never changed
(adding some would move keys to other partitions; a topic with fewer than the
settings ask for is only reported). A broker that refuses to describe or alter
configs leaves the topic as it is, with a warning saying so.

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
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
    ResourceType,
)

from core.config import Settings
from core.topics import TOPICS, TopicSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConfigChange:
    """One config of an existing topic brought to the catalogue's value (``before`` None: it was unset)."""

    name: str
    before: str | None
    after: str

    def __str__(self) -> str:
        return f"{self.name} {self.before or 'unset'} -> {self.after}"


@dataclass(frozen=True)
class TopicState:
    """A topic after provisioning: its partitions, whether we made it now, which configs we changed."""

    name: str
    partitions: int
    created: bool
    altered: tuple[ConfigChange, ...] = ()


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
    """Create every topic that is missing and bring the declared configs of the others to the catalogue;
    report each topic's partition count and what changed."""
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
    present = [spec for spec in topics if spec.name in existing and spec.name not in created]
    altered = align_configs(client, present, timeout_s)
    metadata = client.list_topics(timeout=timeout_s).topics
    states = [
        TopicState(spec.name, len(metadata[spec.name].partitions), spec.name in created,
                   altered.get(spec.name, ()))
        for spec in topics
        if spec.name in metadata
    ]
    for state in states:
        wanted = settings.partitions_of(state.name)
        if state.partitions < wanted:
            log.warning("topic %s has %d partitions, the settings ask for %d: left as it is (more "
                        "partitions would move keys; recreate the topic to change it)",
                        state.name, state.partitions, wanted)
    return states


def align_configs(client: AdminClient, topics: list[TopicSpec],
                  timeout_s: float = 15.0) -> dict[str, tuple[ConfigChange, ...]]:
    """Set each declared config of ``topics`` (existing topics) whose value differs; what changed, by topic.

    One DescribeConfigs and one IncrementalAlterConfigs (SET only: nothing undeclared is touched or
    deleted). A broker that refuses either for a topic leaves that topic as it is, with a warning; one
    that does not know the request leaves them all, with one warning.
    """
    by_name = {spec.name: spec for spec in topics}
    if not by_name:
        return {}
    changes: dict[str, tuple[ConfigChange, ...]] = {}
    for name, current in _results(client.describe_configs(
            [ConfigResource(ResourceType.TOPIC, name) for name in by_name], request_timeout=timeout_s),
            "read the configs of"):
        declared = by_name[name].topic_configs()
        now = {key: entry.value for key, entry in current.items()}
        diff = tuple(ConfigChange(key, now.get(key), value) for key, value in sorted(declared.items())
                     if now.get(key) != value)
        if diff:
            changes[name] = diff
    if not changes:
        return {}
    futures = client.incremental_alter_configs(
        [ConfigResource(ResourceType.TOPIC, name, incremental_configs=[
            ConfigEntry(change.name, change.after, incremental_operation=AlterConfigOpType.SET)
            for change in diff]) for name, diff in changes.items()],
        request_timeout=timeout_s)
    done = {name: changes[name] for name, _ in _results(futures, "alter the configs of")}
    for name, diff in done.items():
        log.info("topic %s: %s", name, "; ".join(str(change) for change in diff))
    return done


def _results(futures: dict[ConfigResource, Any], doing: str) -> list[tuple[str, Any]]:
    """(topic, result) of each admin future that succeeded; a warning for each that failed, or a single
    one (and nothing) when the broker does not know the request."""
    results = []
    for resource, future in futures.items():
        try:
            results.append((resource.name, future.result()))
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if isinstance(error, KafkaError) and error.code() == KafkaError._UNSUPPORTED_FEATURE:
                log.warning("the broker cannot %s topics (%s): existing topics keep their configs",
                            doing, error.str())
                return []
            log.warning("cannot %s topic %s (%s): left as they are", doing, resource.name, exc)
    return results
