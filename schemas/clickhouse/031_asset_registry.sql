-- The registry's own durable state besides the edges: site attributes and
-- nodes. With asset_membership these rebuild the registry after a restart
-- (the local broker keeps nothing), from which assets.changes is re-published.
CREATE TABLE IF NOT EXISTS vpp.asset_sites
(
    site_id String,
    customer_id String,
    lat Float64,
    lon Float64,
    capacity_kwh Float64,
    max_charge_kw Float64,
    max_discharge_kw Float64,
    reserve_pct Float64,
    solar_kwp Float64,
    tariff LowCardinality(String),
    region LowCardinality(String),
    added_at DateTime64(3, 'UTC'),
    retired_at Nullable(DateTime64(3, 'UTC')),
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY site_id;

CREATE TABLE IF NOT EXISTS vpp.asset_nodes
(
    node_id String,
    kind LowCardinality(String),
    name String
)
ENGINE = ReplacingMergeTree
ORDER BY node_id;
