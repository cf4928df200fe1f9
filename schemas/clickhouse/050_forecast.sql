-- Forecasts as issued, and their error once the actuals arrive. A run is one forecast of one
-- series (a node's load or solar, a price region's price) by one model at one time; its points are
-- the targets. Re-writing a run (same run_id, same target) replaces it.
CREATE TABLE IF NOT EXISTS vpp.forecast_runs
(
    run_id String,
    series_kind LowCardinality(String),
    series_id String,
    model LowCardinality(String),
    issued_at DateTime64(3, 'UTC'),
    first_target DateTime('UTC'),
    step_s UInt32,
    horizon_steps UInt16,
    history_steps UInt32,
    filled_steps UInt32,
    note String
)
ENGINE = ReplacingMergeTree
ORDER BY (series_kind, series_id, issued_at, run_id);

-- q10/q50/q90: the 10%, 50% and 90% quantiles (forecast.models.QUANTILES); value is the mean.
CREATE TABLE IF NOT EXISTS vpp.forecast_points
(
    run_id String,
    series_kind LowCardinality(String),
    series_id String,
    model LowCardinality(String),
    issued_at DateTime64(3, 'UTC'),
    target_time DateTime('UTC'),
    horizon_steps UInt16,
    value Float64,
    q10 Float64,
    q50 Float64,
    q90 Float64
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(target_time)
ORDER BY (series_kind, series_id, model, target_time, run_id);

-- Error by horizon per node series and model, over targets whose actuals are in node_minute
-- (the node's mean over the target's 15 minutes). Price series have no actuals table yet.
CREATE VIEW IF NOT EXISTS vpp.forecast_node_errors AS
SELECT
    series_kind,
    series_id,
    model,
    horizon_steps,
    count() AS points,
    avg(abs(value - actual)) AS mae,
    avg((actual >= q10) AND (actual <= q90)) AS coverage_80,
    max(target_time) AS last_target
FROM
(
    SELECT
        p.series_kind AS series_kind,
        p.series_id AS series_id,
        p.model AS model,
        p.horizon_steps AS horizon_steps,
        p.target_time AS target_time,
        p.value AS value,
        p.q10 AS q10,
        p.q90 AS q90,
        if(p.series_kind = 'node_solar', a.solar_kw, a.load_kw) AS actual
    FROM vpp.forecast_points AS p
    INNER JOIN
    (
        SELECT node_id, toStartOfFifteenMinutes(minute) AS target_time, avg(load_kw) AS load_kw,
               avg(solar_kw) AS solar_kw
        FROM vpp.node_minute
        GROUP BY node_id, target_time
    ) AS a ON (a.node_id = p.series_id) AND (a.target_time = p.target_time)
    WHERE p.series_kind IN ('node_load', 'node_solar')
)
GROUP BY series_kind, series_id, model, horizon_steps;
