"""The kept report of a backtest: totals over the decisions priced both ways, every decision as a row."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from vpp.bid_backtest import Replayed, report

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def test_a_report_counts_changes_and_sums_revenue_where_both_bids_were_priced() -> None:
    replayed = [Replayed("wf-1", T0, "a", "a", 10.0, 10.0), Replayed("wf-2", T0, "b", "c", 5.0, 8.0),
                Replayed("wf-3", T0, "d", "e", None, None), Replayed("wf-4", T0, "f", "f", 7.0, None)]
    row = report(replayed, T0, T0 + timedelta(days=1), T0 + timedelta(days=2))
    assert (row.decisions, row.changed) == (4, 2)
    assert (row.stored_revenue_eur, row.replayed_revenue_eur) == (15.0, 18.0)  # wf-4 has no replayed price
    assert [d["workflow_id"] for d in json.loads(row.decisions_json)] == ["wf-1", "wf-2", "wf-3", "wf-4"]
    assert row.report_id.startswith("backtest-20300103T000000Z-")
    assert report(replayed, T0, T0, T0).report_id != row.report_id
