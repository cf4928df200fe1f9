"""Every topic keeps its records as long as they are of use, and no longer: the broker stays bounded.

Before, only the Kubernetes KafkaTopics named a retention; the catalogue (which provisions the local
broker and any cluster `vpp stack up` is pointed at) had none, so those topics kept everything.
"""

from __future__ import annotations

from core.topics import (
    AGGREGATES_LIVE,
    COMMANDS_ACKS,
    COMMANDS_SITE,
    DAY_MS,
    HOUR_MS,
    TELEMETRY_RAW,
    TOPICS,
    TOPICS_BY_NAME,
    WORKFLOW_EVENTS,
)


def test_every_topic_is_compacted_or_has_a_retention() -> None:
    for spec in TOPICS:
        configs = spec.topic_configs()
        assert (configs.get("cleanup.policy") == "compact") != ("retention.ms" in configs), spec.name


def test_retention_follows_each_topics_use() -> None:
    def retention(name: str) -> int:
        return int(TOPICS_BY_NAME[name].topic_configs()["retention.ms"])

    assert HOUR_MS <= retention(TELEMETRY_RAW) <= DAY_MS, "hours: history has the readings in minutes"
    assert retention(COMMANDS_SITE) == retention(COMMANDS_ACKS) == HOUR_MS, "commands are short-lived"
    assert retention(AGGREGATES_LIVE) == HOUR_MS
    assert retention(WORKFLOW_EVENTS) >= 30 * DAY_MS, "the journal is kept long"


def test_a_short_retention_rolls_segments_so_it_takes_effect() -> None:
    """Kafka deletes whole closed segments only, and rolls one after 7 days by default."""
    for spec in TOPICS:
        configs = spec.topic_configs()
        if "retention.ms" in configs and int(configs["retention.ms"]) < 7 * DAY_MS:
            assert int(configs["segment.ms"]) <= int(configs["retention.ms"]) // 4, spec.name
