"""The Autobidder's record: the bids the market accepted with what they cleared, the runs, a run's steps,
and the kept backtests.

Read-only, from ClickHouse (``bids``, ``market_results``, ``workflow_steps``, ``backtest_reports``); runs
are started with ``vpp bid run`` and their journal lives on ``workflow.events`` (``vpp bid status`` /
``replay``); a backtest is run with ``vpp backtest --from T1 --to T2``, which keeps its report.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status
from pydantic import AfterValidator

from api.deps import FleetReader, ResourcesDep
from api.models import (
    BacktestReport,
    BacktestSummary,
    BidBand,
    BidPublic,
    Page,
    WorkflowPublic,
    WorkflowStepPublic,
    storable,
)
from api.workflow_record import summarise
from core.bid_history import BidStore
from core.rows import BacktestReportRow

router = APIRouter(prefix="/v1/bidding", tags=["bidding"])
LAST_INTERVAL = datetime(2106, 1, 1, tzinfo=UTC)  # the interval column is a DateTime (to 2106)


@router.get("/bids", summary="An asset's accepted bids and what they cleared")
def list_bids(_: FleetReader, resources: ResourcesDep,
              asset_id: Annotated[str, Query(max_length=200, description="The asset bid into the market.")],
              start: Annotated[datetime | None, AfterValidator(storable),
                               Query(description="Intervals from (1970-2200); default a day ago.")] = None,
              end: Annotated[datetime | None, AfterValidator(storable),
                             Query(description="Intervals before (1970-2200); default in a day.")] = None,
              ) -> Page[BidPublic]:
    """One curve per interval and product (a rebid replaced the earlier one), with its clearing if cleared."""
    now = datetime.now(UTC)
    first, last = start or now - timedelta(days=1), min(end or now + timedelta(days=1), LAST_INTERVAL)
    with resources.history() as history:
        store = BidStore(history.client, history.db)
        bids = store.bids(asset_id, first, last)
        cleared = {(r.interval_start, r.product): r for r in store.results(asset_id, first, last)}
    data = []
    for bid in bids:
        result = cleared.get((bid.interval_start, bid.product))
        data.append(BidPublic(
            asset_id=bid.asset_id, interval_start=bid.interval_start, product=bid.product, region=bid.region,
            workflow_id=bid.workflow_id,
            bands=[BidBand(price=p, quantity_mw=q) for p, q in json.loads(bid.bands_json)],
            note=bid.note, artifact_id=bid.artifact_id, submitted_at=bid.submitted_at,
            cleared_price=result.price if result else None, cleared_mw=result.quantity_mw if result else None,
            revenue_eur=result.revenue_eur if result else None))
    return Page(data=data, count=len(data))


@router.get("/workflows", summary="Bidding runs with how they ended, newest first")
def list_workflows(_: FleetReader, resources: ResourcesDep,
                   asset_id: Annotated[str | None, Query(max_length=200,
                                                         description="Only this asset's runs.")] = None,
                   start: Annotated[datetime | None, AfterValidator(storable), Query(
                       description="Runs with a step finished from (default: a day ago).")] = None,
                   end: Annotated[datetime | None, AfterValidator(storable),
                                  Query(description="... and before (default now).")] = None,
                   limit: Annotated[int, Query(ge=1, le=5000)] = 500,
                   offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0) -> Page[WorkflowPublic]:
    """Each run's state (submitted, failed, running), whether it fell back to a safe bid, and its flags.

    ``count`` is every run in the range; ``data`` the page of it from ``offset``, newest first.
    """
    now = datetime.now(UTC)
    first, last = start or now - timedelta(days=1), end or now
    with resources.history() as history:
        store = BidStore(history.client, history.db)
        steps = store.recent_steps(first, last, asset_id)
        runs = summarise(steps, store.run_bids(sorted({s.workflow_id for s in steps})))
    page = runs[offset:offset + limit]
    data = [WorkflowPublic(**{f: getattr(r, f) for f in WorkflowPublic.model_fields}) for r in page]
    return Page(data=data, count=len(runs))


@router.get("/workflows/{workflow_id}/steps", summary="What each task of a bidding run produced")
def list_steps(_: FleetReader, resources: ResourcesDep,
               workflow_id: str) -> Page[WorkflowStepPublic]:
    """Every (step, attempt) a worker finished for the run: its output artifact or why it failed."""
    with resources.history() as history:
        steps = BidStore(history.client, history.db).steps(workflow_id)
    if not steps:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no bidding run {workflow_id!r} on record")
    data = [WorkflowStepPublic(step=s.step, attempt=s.attempt, output=s.output, error=s.error,
                               worker=s.worker, finished_at=s.finished_at) for s in steps]
    return Page(data=data, count=len(data))


def _summary(row: BacktestReportRow) -> dict[str, object]:
    return {name: getattr(row, name) for name in BacktestSummary.model_fields}


@router.get("/backtests", summary="Kept backtests of the bidding decisions, newest first")
def list_backtests(_: FleetReader, resources: ResourcesDep,
                   limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                   offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0) -> Page[BacktestSummary]:
    """What each ``vpp backtest`` found: decisions replayed, how many would change, both revenues."""
    with resources.history() as history:
        rows = BidStore(history.client, history.db).backtests()
    return Page(data=[BacktestSummary.model_validate(_summary(r)) for r in rows[offset:offset + limit]],
                count=len(rows))


@router.get("/backtests/{report_id}", summary="One kept backtest with every decision it replayed")
def get_backtest(_: FleetReader, resources: ResourcesDep, report_id: str) -> BacktestReport:
    """The report's totals and, per decision, the stored and the replayed bid and their revenues."""
    with resources.history() as history:
        row = BidStore(history.client, history.db).backtest(report_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND,
                            f"no backtest report {report_id!r} (each vpp backtest keeps one)")
    return BacktestReport.model_validate({**_summary(row), "data": json.loads(row.decisions_json)})
