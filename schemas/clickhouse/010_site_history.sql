-- Per-site one-minute event-time windows. ReplacingMergeTree keyed by
-- (site_id, minute): a window replayed after a crash replaces, never doubles.
-- Read with FINAL. Power in kW: battery_kw > 0 discharging, grid_kw > 0 importing.
CREATE TABLE IF NOT EXISTS vpp.site_minute
(
    site_id String,
    minute DateTime('UTC'),
    battery_kw_mean Float64,
    battery_kw_min Float64,
    battery_kw_max Float64,
    solar_kw_mean Float64,
    load_kw_mean Float64,
    grid_kw_mean Float64,
    soc_pct_last Float64,
    energy_available_kwh_last Float64,
    samples UInt32,
    coverage Float64,
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(minute)
ORDER BY (site_id, minute);

-- Hour and day rollups: ReplacingMergeTree rows that the history store
-- recomputes from site_minute FINAL for the sites and hours/days a minute batch touched
-- (an idempotent INSERT ... SELECT), so replays never double count, which a
-- summing materialized view would. `period` is the hour or the day start.
CREATE TABLE IF NOT EXISTS vpp.site_hour
(
    site_id String,
    period DateTime('UTC'),
    battery_kw_mean Float64,
    battery_kw_min Float64,
    battery_kw_max Float64,
    solar_kw_mean Float64,
    load_kw_mean Float64,
    grid_kw_mean Float64,
    soc_pct_last Float64,
    energy_available_kwh_last Float64,
    samples UInt64,
    coverage Float64,
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(period)
ORDER BY (site_id, period);

CREATE TABLE IF NOT EXISTS vpp.site_day AS vpp.site_hour
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYear(period)
ORDER BY (site_id, period);
