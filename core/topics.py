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

#: The consumer groups the dataflows commit their read positions to at every epoch, so standard lag
#: tools (kafka-consumer-groups, Burrow, kafka-lag-exporter) see them. Commits only: each flow resumes
#: from its Bytewax recovery store and never joins the group (operators.kafka_batches).
TELEMETRY_DATAFLOW_GROUP = "vpp-telemetry-dataflow"
CONTROL_DATAFLOW_GROUP = "vpp-control-dataflow"
PLANS_DATAFLOW_GROUP = "vpp-plans-dataflow"
BIDDING_DATAFLOW_GROUP = "vpp-bidding-dataflow"


HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
#: Kafka rolls a segment after this long by default, and deletes only whole, closed segments.
_DEFAULT_SEGMENT_MS = 7 * DAY_MS


@dataclass(frozen=True)
class TopicSpec:
    """One topic: its name, what its key is, the Avro record of its values, how long it keeps records.

    ``retention_ms`` is set for every topic that is not compacted: how long its records are any use
    (a replay after an outage, an audit, a journal). A retention shorter than Kafka's default segment
    (7 days) also sets ``segment.ms`` to a quarter of it, since only closed segments are deleted:
    otherwise a quiet topic would keep a week whatever its retention says.
    """

    name: str
    key: str
    value_schema: str
    compacted: bool = False
    retention_ms: int | None = None
    configs: dict[str, str] = field(default_factory=dict)

    def topic_configs(self) -> dict[str, str]:
        """Broker configs to create the topic with."""
        configs = dict(self.configs)
        if self.compacted:
            configs["cleanup.policy"] = "compact"
        if self.retention_ms is not None:
            configs["retention.ms"] = str(self.retention_ms)
            if self.retention_ms < _DEFAULT_SEGMENT_MS:
                configs["segment.ms"] = str(self.retention_ms // 4)
        return configs


TOPICS: tuple[TopicSpec, ...] = (
    # Readings are in history within minutes; the log only has to outlast a dataflow outage.
    TopicSpec(TELEMETRY_RAW, "site_id", "SiteTelemetry", retention_ms=12 * HOUR_MS),
    # Kept for someone to look at why a record was refused.
    TopicSpec(TELEMETRY_DLQ, "original key", "DeadLetter", retention_ms=14 * DAY_MS),
    # The latest ancestry of every site, forever (compaction, no time limit).
    TopicSpec(ASSETS_CHANGES, "site_id", "SiteAncestry", compacted=True),
    TopicSpec(TWIN_STATUS, "site_id", "SiteStatus", retention_ms=DAY_MS),
    # Live values: the next aggregate replaces each within seconds.
    TopicSpec(AGGREGATES_LIVE, "node_id", "NodeAggregate", retention_ms=HOUR_MS),
    TopicSpec(DISPATCH_REQUESTS, "dispatch_id", "DispatchRequest", retention_ms=7 * DAY_MS),
    # A command is valid for minutes and retried until acknowledged: an old one is no use.
    TopicSpec(COMMANDS_SITE, "site_id", "SiteCommand", retention_ms=HOUR_MS),
    TopicSpec(COMMANDS_ACKS, "site_id", "CommandAck", retention_ms=HOUR_MS),
    TopicSpec(DISPATCH_STATUS, "dispatch_id", "DispatchStatus", retention_ms=7 * DAY_MS),
    TopicSpec(PRICES_FORECAST, "region", "PriceForecast", retention_ms=7 * DAY_MS),
    TopicSpec(PLANS_SITE, "site_id", "SitePlan", retention_ms=7 * DAY_MS),
    # The bidding workflow's journal: long, for audits and backtests.
    TopicSpec(WORKFLOW_EVENTS, "workflow_id", "WorkflowEvent", retention_ms=30 * DAY_MS),
    # Gateways read it whole: longer than any watch lasts.
    TopicSpec(STORM_WATCH, "node_id", "StormWatch", retention_ms=8 * DAY_MS),
    TopicSpec(WORKFLOW_TASKS, "workflow_id", "WorkflowTask", retention_ms=7 * DAY_MS),
    TopicSpec(WORKFLOW_RESULTS, "workflow_id", "WorkflowResult", retention_ms=7 * DAY_MS),
    # The latest aggregate plan of each node, for the bidder and API streams: a newer one replaces it.
    TopicSpec(PLANS_NODE, "node_id", "NodePlan", retention_ms=DAY_MS),
)

TOPICS_BY_NAME: dict[str, TopicSpec] = {spec.name: spec for spec in TOPICS}

#: The record of each topic's values, by topic: what a schema registry registers under ``<topic>-value``.
VALUE_SCHEMAS: dict[str, str] = {spec.name: spec.value_schema for spec in TOPICS}
