"""GET /v1/bidding/bids and /v1/bidding/workflows/{id}/steps: the Autobidder's record, read back."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from core import history
from core.bid_history import BidStore
from core.rows import BacktestReportRow, BidRow, MarketResultRow, WorkflowStepRow
from tests.api.conftest import Api

pytestmark = pytest.mark.integration

INTERVAL = datetime(2030, 1, 2, 10, tzinfo=UTC)


def test_bids_come_with_their_clearing_and_a_run_with_its_steps(api: Api) -> None:
    asset, run = f"battery-{uuid.uuid4().hex[:8]}", f"wf-{uuid.uuid4().hex[:8]}"
    client = history.connect(api.settings)
    store = BidStore(client, api.settings.clickhouse_database)
    at = datetime.now(UTC).replace(microsecond=0)
    curve = "[[-500.0,-1.0],[40.0,0.0],[60.0,1.0]]"
    later = INTERVAL + timedelta(hours=1)
    store.put_bids([BidRow(asset, INTERVAL, "energy", "DE", run, curve, "", "bid-1", at),
                    BidRow(asset, later, "energy", "DE", run, "[[-500.0,0.0]]", "", "bid-2", at)])
    store.put_results([MarketResultRow(asset, INTERVAL, "energy", 70.0, 1.0, 70.0, run, at)])
    store.put_step(WorkflowStepRow(run, "fetch", 1, "market-1", None, "worker-a", at))
    store.put_step(WorkflowStepRow(run, "optimise", 1, None, "timed out", "worker-a",
                                   at + timedelta(seconds=1)))
    client.close()
    window = {"start": INTERVAL.isoformat(), "end": (INTERVAL + timedelta(hours=2)).isoformat()}
    with api.client(None) as anonymous:
        assert anonymous.get("/v1/bidding/bids", params={"asset_id": asset, **window}).status_code == 401
    with api.client("read") as reader:
        bids = reader.get("/v1/bidding/bids", params={"asset_id": asset, **window}).json()
        steps = reader.get(f"/v1/bidding/workflows/{run}/steps").json()
        assert reader.get("/v1/bidding/workflows/no-such-run/steps").status_code == 404
    assert bids["count"] == 2
    first, second = bids["data"]
    assert first["bands"][-1] == {"price": 60.0, "quantity_mw": 1.0}
    assert (first["cleared_price"], first["cleared_mw"], first["revenue_eur"]) == (70.0, 1.0, 70.0)
    assert second["cleared_price"] is None, "not cleared yet"
    assert [(s["step"], s["output"], s["error"]) for s in steps["data"]] == [
        ("fetch", "market-1", None), ("optimise", None, "timed out")]


def test_runs_are_listed_newest_first_with_state_and_the_safe_bid_flagged(api: Api) -> None:
    asset = f"battery-{uuid.uuid4().hex[:8]}"
    done, safe = f"{asset}@20300102T1000Z#0", f"{asset}@20300102T1005Z#0"
    client = history.connect(api.settings)
    store = BidStore(client, api.settings.clickhouse_database)
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
    record = [(done, "fetch"), (done, "optimise"), (done, "submit"), (safe, "fetch"), (safe, "safe_bid"),
              (safe, "submit")]
    for i, (run, step) in enumerate(record):
        store.put_step(WorkflowStepRow(run, step, 1, f"out-{i}", None, "worker-a", at + timedelta(seconds=i)))
    store.put_bids([BidRow(asset, INTERVAL, "energy", "DE", safe, "[[-500.0,0.0]]", "safe bid: no forecast",
                           "bid-s", at)])
    client.close()
    with api.client("read") as reader:
        runs = reader.get("/v1/bidding/workflows", params={"asset_id": asset}).json()
        page = reader.get("/v1/bidding/workflows", params={"asset_id": asset, "limit": 1, "offset": 1}).json()
        bad = reader.get("/v1/bidding/workflows", params={"limit": 0})
    assert runs["count"] == 2 and [r["workflow_id"] for r in runs["data"]] == [safe, done]
    newest, oldest = runs["data"]
    assert newest["state"] == oldest["state"] == "submitted"
    assert newest["safe_bid"] is True and newest["flags"] == ["safe bid"]
    assert newest["note"] == "safe bid: no forecast"
    assert oldest["safe_bid"] is False and oldest["flags"] == []
    assert datetime.fromisoformat(oldest["interval_start"]) == datetime(2030, 1, 2, 10, tzinfo=UTC)
    assert page["count"] == 2 and [r["workflow_id"] for r in page["data"]] == [done]
    assert bad.status_code == 422 and bad.headers["content-type"].startswith("application/problem+json")


def test_a_backtest_keeps_its_report_and_the_api_serves_it(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from typer.testing import CliRunner

    from vpp.cli import app
    from vpp.dataflows import settings_env

    for name, value in settings_env(api.settings).items():
        monkeypatch.setenv(name, value)
    window = ["--from", "2031-01-01T00:00:00+00:00", "--to", "2031-01-02T00:00:00+00:00"]  # nothing decided
    ran = CliRunner().invoke(app, ["backtest", *window, "--json"])
    assert ran.exit_code == 0, ran.output
    kept = json.loads(ran.output)["report_id"]
    client = history.connect(api.settings)
    earlier = BacktestReportRow("backtest-earlier", datetime(2020, 1, 3, tzinfo=UTC), INTERVAL,
                                INTERVAL + timedelta(days=1), 2, 1, 100.0, 112.5, json.dumps([
                                    {"workflow_id": "wf-1", "interval_start": INTERVAL.isoformat(),
                                     "identical": False, "stored": "a", "replayed": "b",
                                     "stored_revenue_eur": 100.0, "replayed_revenue_eur": 112.5},
                                    {"workflow_id": "wf-2", "interval_start": INTERVAL.isoformat(),
                                     "identical": True, "stored": "c", "replayed": "c",
                                     "stored_revenue_eur": None, "replayed_revenue_eur": None}]))
    BidStore(client, api.settings.clickhouse_database).put_backtest(earlier)
    client.close()
    with api.client("read") as reader:
        listed = reader.get("/v1/bidding/backtests").json()
        paged = reader.get("/v1/bidding/backtests", params={"limit": 1, "offset": 1}).json()
        one = reader.get("/v1/bidding/backtests/backtest-earlier").json()
        mine = reader.get(f"/v1/bidding/backtests/{kept}").json()
        missing = reader.get("/v1/bidding/backtests/no-such-report")
    ids = [r["report_id"] for r in listed["data"]]
    assert ids[0] == kept and ids[-1] == "backtest-earlier" and listed["count"] == len(ids)  # newest first
    assert [r["report_id"] for r in paged["data"]] == [ids[1]]
    assert (mine["decisions"], mine["changed"], mine["data"]) == (0, 0, [])
    assert datetime.fromisoformat(mine["window_start"]) == datetime(2031, 1, 1, tzinfo=UTC)
    assert (one["changed"], one["stored_revenue_eur"], one["replayed_revenue_eur"]) == (1, 100.0, 112.5)
    assert [(d["workflow_id"], d["identical"]) for d in one["data"]] == [("wf-1", False), ("wf-2", True)]
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/problem+json")
