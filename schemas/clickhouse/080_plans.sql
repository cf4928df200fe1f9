-- Site plans (co-optimisation), written by the plans dataflow (dataflows/plans.py).
-- site_plan: every plan a site sent that passed the checks; a replayed plan_id replaces itself.
CREATE TABLE IF NOT EXISTS vpp.site_plan
(
    site_id String,
    plan_id String,
    issued_at DateTime64(3, 'UTC'),
    start DateTime64(3, 'UTC'),
    interval_minutes UInt16,
    power_kw Array(Float64),
    forecast_issued_at Nullable(DateTime64(3, 'UTC')),
    received_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(received_at)
PARTITION BY toYYYYMM(issued_at)
ORDER BY (site_id, issued_at, plan_id);

-- node_plan: a node's aggregate plan per interval; a later computation of the same interval
-- replaces the earlier one (read with FINAL: the latest aggregate of each interval).
CREATE TABLE IF NOT EXISTS vpp.node_plan
(
    node_id String,
    hierarchy LowCardinality(String),
    interval_start DateTime64(3, 'UTC'),
    interval_minutes UInt16,
    planned_kw Float64,
    estimate_kw Float64,
    expected_sites UInt32,
    planned_sites UInt32,
    carried_sites UInt32,
    stale_sites UInt32,
    coverage Float64,
    computed_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(computed_at)
PARTITION BY toYYYYMM(interval_start)
ORDER BY (node_id, interval_start);
