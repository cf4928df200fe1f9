-- The Autobidder's history (issue 15). Task inputs and outputs are in workflow_artifacts
-- (040_control.sql): immutable, named by the sha256 of their canonical JSON (bidding.artifacts), so
-- a re-done task writes the same row again and it replaces itself.

-- What each (workflow, step, attempt) produced, as the worker recorded it before producing the result:
-- the worker's idempotency record (a re-delivered task answers from here instead of being done again).
CREATE TABLE IF NOT EXISTS vpp.workflow_steps
(
    workflow_id String,
    step String,
    attempt UInt16,
    output Nullable(String),
    error Nullable(String),
    worker String,
    finished_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(finished_at)
ORDER BY (workflow_id, step, attempt);

-- The bids the market accepted: one curve per asset, interval and product. A rebid replaces (latest
-- submitted_at wins), as the market keeps only the newest curve; bands as JSON [[price, MW], ...].
CREATE TABLE IF NOT EXISTS vpp.bids
(
    asset_id String,
    interval_start DateTime('UTC'),
    product LowCardinality(String),
    region LowCardinality(String),
    workflow_id String,
    bands_json String,
    note String,
    artifact_id String,
    submitted_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(submitted_at)
PARTITION BY toYYYYMM(interval_start)
ORDER BY (asset_id, interval_start, product);

-- What the (simulated) market cleared: dispatch and revenue per asset, interval and product. Cleared
-- again (a replay) an interval replaces itself.
CREATE TABLE IF NOT EXISTS vpp.market_results
(
    asset_id String,
    interval_start DateTime('UTC'),
    product LowCardinality(String),
    price Float64,
    quantity_mw Float64,
    revenue_eur Float64,
    workflow_id String,
    cleared_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(cleared_at)
PARTITION BY toYYYYMM(interval_start)
ORDER BY (asset_id, interval_start, product);
