-- Day-ahead market prices per price region, as published. Locally the market feed (vpp.market_feed)
-- replays a pinned real series onto the current calendar and `source` names it (e.g. smard:DE:2018);
-- in production an adapter for a real market writes the same rows. A re-published interval replaces
-- the earlier row (latest published_at wins).
CREATE TABLE IF NOT EXISTS vpp.market_prices
(
    region String,
    interval_start DateTime('UTC'),
    interval_minutes UInt16,
    price_eur_mwh Float64,
    published_at DateTime64(3, 'UTC'),
    source LowCardinality(String)
)
ENGINE = ReplacingMergeTree(published_at)
PARTITION BY toYYYYMM(interval_start)
ORDER BY (region, interval_start);

-- Error by horizon per price region and model, over targets whose price has been published.
CREATE VIEW IF NOT EXISTS vpp.forecast_price_errors AS
SELECT
    p.series_id AS series_id,
    p.model AS model,
    p.horizon_steps AS horizon_steps,
    count() AS points,
    avg(abs(p.value - a.price_eur_mwh)) AS mae,
    avg((a.price_eur_mwh >= p.q10) AND (a.price_eur_mwh <= p.q90)) AS coverage_80,
    max(p.target_time) AS last_target
FROM vpp.forecast_points AS p
INNER JOIN
(
    SELECT region, interval_start, argMax(price_eur_mwh, published_at) AS price_eur_mwh
    FROM vpp.market_prices
    GROUP BY region, interval_start
) AS a ON (a.region = p.series_id) AND (a.interval_start = p.target_time)
WHERE p.series_kind = 'price'
GROUP BY series_id, model, horizon_steps;
