-- Effective-dated edges of every hierarchy (electrical, geographic, program):
-- "which sites were under this feeder last March". valid_to NULL = still valid.
-- Re-applying the same change (same change_id) replaces its row, never duplicates.
CREATE TABLE IF NOT EXISTS vpp.asset_membership
(
    child_id String,
    child_kind LowCardinality(String),
    parent_id String,
    hierarchy LowCardinality(String),
    valid_from DateTime64(3, 'UTC'),
    valid_to Nullable(DateTime64(3, 'UTC')),
    change_id String,
    recorded_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(recorded_at)
ORDER BY (hierarchy, child_id, valid_from, parent_id);
