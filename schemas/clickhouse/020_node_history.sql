-- Per-node one-minute windows of the live aggregate (means of the node's summed
-- power over the minute). Same replay-safe design as site_minute.
CREATE TABLE IF NOT EXISTS vpp.node_minute
(
    node_id String,
    hierarchy LowCardinality(String),
    minute DateTime('UTC'),
    battery_kw Float64,
    battery_kw_min Float64,
    battery_kw_max Float64,
    solar_kw Float64,
    load_kw Float64,
    grid_kw Float64,
    energy_available_kwh Float64,
    charge_headroom_kwh Float64,
    expected_sites UInt32,
    reporting_sites UInt32,
    coverage Float64,
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(minute)
ORDER BY (node_id, minute);

CREATE TABLE IF NOT EXISTS vpp.node_hour
(
    node_id String,
    hierarchy LowCardinality(String),
    period DateTime('UTC'),
    battery_kw Float64,
    battery_kw_min Float64,
    battery_kw_max Float64,
    solar_kw Float64,
    load_kw Float64,
    grid_kw Float64,
    energy_available_kwh Float64,
    charge_headroom_kwh Float64,
    expected_sites UInt32,
    reporting_sites UInt32,
    coverage Float64,
    minutes UInt32,
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(period)
ORDER BY (node_id, period);

CREATE TABLE IF NOT EXISTS vpp.node_day AS vpp.node_hour
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYear(period)
ORDER BY (node_id, period);
