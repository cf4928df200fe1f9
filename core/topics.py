"""The Kafka topics of the platform: names, keys, value schemas and retention.

This is the one place a topic name is spelled; every producer and consumer
imports the constant. The table mirrors the Topics section of DESIGN.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field

TELEMETRY_RAW = "telemetry.raw"
TELEMETRY_DLQ = "telemetry.dlq"
ASSETS_CHANGES = "assets.changes"
TWIN_STATUS = "twin.status"
AGGREGATES_LIVE = "aggregates.live"
DISPATCH_REQUESTS = "dispatch.requests"
COMMANDS_SITE = "commands.site"
COMMANDS_ACKS = "commands.acks"
DISPATCH_STATUS = "dispatch.status"
PRICES_FORECAST = "prices.forecast"
PLANS_SITE = "plans.site"
WORKFLOW_EVENTS = "workflow.events"
STORM_WATCH = "storm.watch"
WORKFLOW_TASKS = "workflow.tasks"
WORKFLOW_RESULTS = "workflow.results"
PLANS_NODE = "plans.node"


@dataclass(frozen=True)
class TopicSpec:
    """One topic: its name, what its key is, the Avro record of its values, its configs."""

    name: str
    key: str
    value_schema: str
    compacted: bool = False
    configs: dict[str, str] = field(default_factory=dict)

    def topic_configs(self) -> dict[str, str]:
        """Broker configs to create the topic with."""
        configs = dict(self.configs)
        if self.compacted:
            configs["cleanup.policy"] = "compact"
        return configs


TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(TELEMETRY_RAW, "site_id", "SiteTelemetry"),
    TopicSpec(TELEMETRY_DLQ, "original key", "DeadLetter"),
    TopicSpec(ASSETS_CHANGES, "site_id", "SiteAncestry", compacted=True),
    TopicSpec(TWIN_STATUS, "site_id", "SiteStatus"),
    TopicSpec(AGGREGATES_LIVE, "node_id", "NodeAggregate"),
    TopicSpec(DISPATCH_REQUESTS, "dispatch_id", "DispatchRequest"),
    TopicSpec(COMMANDS_SITE, "site_id", "SiteCommand"),
    TopicSpec(COMMANDS_ACKS, "site_id", "CommandAck"),
    TopicSpec(DISPATCH_STATUS, "dispatch_id", "DispatchStatus"),
    TopicSpec(PRICES_FORECAST, "region", "PriceForecast"),
    TopicSpec(PLANS_SITE, "site_id", "SitePlan"),
    TopicSpec(WORKFLOW_EVENTS, "workflow_id", "WorkflowEvent"),
    TopicSpec(STORM_WATCH, "node_id", "StormWatch"),
    TopicSpec(WORKFLOW_TASKS, "workflow_id", "WorkflowTask"),
    TopicSpec(WORKFLOW_RESULTS, "workflow_id", "WorkflowResult"),
    TopicSpec(PLANS_NODE, "node_id", "NodePlan"),
)

TOPICS_BY_NAME: dict[str, TopicSpec] = {spec.name: spec for spec in TOPICS}

#: The record of each topic's values, by topic: what a schema registry registers under ``<topic>-value``.
VALUE_SCHEMAS: dict[str, str] = {spec.name: spec.value_schema for spec in TOPICS}
