-- Peak-shaving days, one row per node and day (peak.events builds them). A plan is written as
-- `planned` (or `no_event` / `refused` with the reason in note) and rewritten as `completed` once
-- the day is measured: ReplacingMergeTree keeps the latest recorded_at per (node_id, day).
-- counterfactual_peak_kw: the day's peak without the fleet (measured net load plus measured
-- discharge); rebound: the peak with the fleet above it.
CREATE TABLE IF NOT EXISTS vpp.peak_events
(
    node_id String,
    day DateTime('UTC'),
    plan_id String,
    status LowCardinality(String),
    forecast_peak_kw Float64,
    threshold_kw Float64,
    actual_peak_kw Float64,
    counterfactual_peak_kw Float64,
    energy_delivered_kwh Float64,
    energy_recharged_kwh Float64,
    rebound Bool,
    note String,
    recorded_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(recorded_at)
PARTITION BY toYYYYMM(day)
ORDER BY (node_id, day);
