-- Dispatch and command journals. Keyed by their natural keys so a replayed
-- event (same id, same event time) replaces itself.
CREATE TABLE IF NOT EXISTS vpp.dispatch_log
(
    dispatch_id String,
    event_time DateTime64(3, 'UTC'),
    state LowCardinality(String),
    node_id Nullable(String),
    target_kw Float64,
    measured_kw Float64,
    error_kw Float64,
    shortfall_kw Float64,
    sites_total UInt32,
    sites_acked UInt32,
    sites_pending UInt32,
    sites_rejected UInt32
)
ENGINE = ReplacingMergeTree
ORDER BY (dispatch_id, event_time);

CREATE TABLE IF NOT EXISTS vpp.command_log
(
    command_id String,
    dispatch_id String,
    site_id String,
    setpoint_kw Float64,
    valid_from DateTime64(3, 'UTC'),
    valid_until DateTime64(3, 'UTC'),
    attempt UInt16,
    status LowCardinality(String),
    event_time DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY (command_id, attempt, status, event_time);

-- Immutable inputs and outputs of each bidding-workflow step, for backtests.
CREATE TABLE IF NOT EXISTS vpp.workflow_artifacts
(
    workflow_id String,
    step String,
    artifact_id String,
    kind LowCardinality(String),
    created_at DateTime64(3, 'UTC'),
    content String,
    content_sha256 FixedString(64)
)
ENGINE = ReplacingMergeTree
ORDER BY (workflow_id, step, artifact_id);
