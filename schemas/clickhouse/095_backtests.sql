-- Backtest reports (issue 15): what `vpp backtest --from T1 --to T2` found when it replayed the stored
-- bidding decisions of a window through the logic of the day it ran, kept so that the API and the
-- console can show them later. One row per report; the per-decision rows as JSON
-- ([{workflow_id, interval_start, identical, stored, replayed, stored_revenue_eur, replayed_revenue_eur}]).
CREATE TABLE IF NOT EXISTS vpp.backtest_reports
(
    report_id String,
    ran_at DateTime64(3, 'UTC'),
    window_start DateTime64(3, 'UTC'),
    window_end DateTime64(3, 'UTC'),
    decisions UInt32,
    changed UInt32,
    stored_revenue_eur Float64,
    replayed_revenue_eur Float64,
    decisions_json String
)
ENGINE = ReplacingMergeTree(ran_at)
ORDER BY report_id;
