"""The Autobidder's history in ClickHouse: artifacts, the workers' step records, bids and market results.

Every table is a ReplacingMergeTree (schemas/clickhouse/090_bidding.sql), so whatever a crashed
worker or a replayed epoch writes again replaces itself: an artifact is named by its content, a
step record by (workflow, step, attempt), a bid by (asset, interval, product).
"""

from __future__ import annotations

from dataclasses import astuple, fields
from datetime import UTC, datetime
from typing import Any, Protocol

from clickhouse_connect.driver.client import Client

from core.rows import BacktestReportRow, BidRow, MarketResultRow, WorkflowArtifactRow, WorkflowStepRow


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Named(Protocol):
    """An artifact as :mod:`bidding.artifacts` makes it (core does not import the logic layer)."""

    @property
    def artifact_id(self) -> str: ...

    @property
    def kind(self) -> str: ...

    @property
    def body(self) -> bytes: ...


def artifact_row(made: Named, workflow_id: str, step: str, now: datetime) -> WorkflowArtifactRow:
    """The ``workflow_artifacts`` row of an artifact made by ``step`` of ``workflow_id``."""
    return WorkflowArtifactRow(workflow_id, step, made.artifact_id, made.kind, now, made.body.decode(),
                               made.artifact_id)


class BidStore:
    """Inserts and reads of the bidding tables."""

    def __init__(self, client: Client, database: str = "vpp") -> None:
        self.client = client
        self.db = database

    def _insert(self, table: str, rows: list[Any]) -> None:
        if rows:
            names = [f.name for f in fields(rows[0])]
            self.client.insert(f"{self.db}.{table}", [astuple(r) for r in rows], column_names=names)

    def _select(self, table: str, kind: type[Any], where: str, parameters: dict[str, Any],
                order: str = "") -> list[Any]:
        names = [f.name for f in fields(kind)]
        query = f"SELECT {', '.join(names)} FROM {self.db}.{table} FINAL WHERE {where} {order}"
        rows = []
        for raw in self.client.query(query, parameters=parameters).result_rows:
            rows.append(kind(*[_utc(v) if isinstance(v, datetime) else v for v in raw]))
        return rows

    def put_artifacts(self, rows: list[WorkflowArtifactRow]) -> None:
        """Store artifacts (one already stored replaces itself: the same id is the same body)."""
        self._insert("workflow_artifacts", rows)

    def artifacts(self, ids: list[str]) -> dict[str, WorkflowArtifactRow]:
        """The stored artifacts among ``ids``, by id (any row of each: the same id is the same content)."""
        if not ids:
            return {}
        found = self._select("workflow_artifacts", WorkflowArtifactRow, "artifact_id IN %(ids)s",
                             {"ids": list(ids)})
        return {row.artifact_id: row for row in found}

    def put_step(self, row: WorkflowStepRow) -> None:
        """Record what a task attempt produced (before its result is sent)."""
        self._insert("workflow_steps", [row])

    def step(self, workflow_id: str, step: str, attempt: int) -> WorkflowStepRow | None:
        """What (workflow, step, attempt) produced, if a worker recorded it."""
        found = self._select("workflow_steps", WorkflowStepRow,
                             "workflow_id = %(wf)s AND step = %(step)s AND attempt = %(attempt)s",
                             {"wf": workflow_id, "step": step, "attempt": attempt})
        return found[0] if found else None

    def done_steps(self, step: str, start: datetime, end: datetime) -> list[WorkflowStepRow]:
        """Every successful record of ``step`` that finished in [start, end), oldest first."""
        return self._select("workflow_steps", WorkflowStepRow, "step = %(step)s AND output IS NOT NULL AND "
                            "finished_at >= %(start)s AND finished_at < %(end)s",
                            {"step": step, "start": start, "end": end}, "ORDER BY finished_at")

    def run_artifacts(self, workflow_id: str) -> list[WorkflowArtifactRow]:
        """Every artifact a run's tasks (and its request) made."""
        return self._select("workflow_artifacts", WorkflowArtifactRow, "workflow_id = %(wf)s",
                            {"wf": workflow_id})

    def steps(self, workflow_id: str) -> list[WorkflowStepRow]:
        """Every step record of a run, in the order they finished."""
        return self._select("workflow_steps", WorkflowStepRow, "workflow_id = %(wf)s", {"wf": workflow_id},
                            "ORDER BY finished_at")

    def step_rows_written(self, workflow_id: str) -> int:
        """How many step rows were ever inserted for a run (before replacing: a redone task shows here)."""
        result = self.client.query(f"SELECT count() FROM {self.db}.workflow_steps WHERE workflow_id = %(wf)s",
                                   parameters={"wf": workflow_id})
        return int(result.result_rows[0][0])

    def put_bids(self, rows: list[BidRow]) -> None:
        """Record accepted curves (a rebid of the same asset, interval and product replaces)."""
        self._insert("bids", rows)

    def bids(self, asset_id: str, start: datetime, end: datetime) -> list[BidRow]:
        """The asset's accepted curves for intervals in [start, end), by interval and product."""
        return self._select("bids", BidRow, "asset_id = %(asset)s AND interval_start >= %(start)s AND "
                            "interval_start < %(end)s", {"asset": asset_id, "start": start, "end": end},
                            "ORDER BY interval_start, product")

    def bids_due(self, before: datetime) -> list[BidRow]:
        """Accepted curves of intervals starting before ``before`` that have no market result yet."""
        return self._select(
            "bids", BidRow, "interval_start < %(before)s AND (asset_id, interval_start, product) NOT IN "
            f"(SELECT asset_id, interval_start, product FROM {self.db}.market_results)",
            {"before": before}, "ORDER BY interval_start")

    def put_results(self, rows: list[MarketResultRow]) -> None:
        """Record what the market cleared (cleared again, an interval replaces itself)."""
        self._insert("market_results", rows)

    def results(self, asset_id: str, start: datetime, end: datetime) -> list[MarketResultRow]:
        """What the asset was cleared for intervals in [start, end)."""
        return self._select("market_results", MarketResultRow, "asset_id = %(asset)s AND interval_start >= "
                            "%(start)s AND interval_start < %(end)s",
                            {"asset": asset_id, "start": start, "end": end},
                            "ORDER BY interval_start, product")

    def recent_steps(self, start: datetime, end: datetime,
                     asset_id: str | None = None) -> list[WorkflowStepRow]:
        """Every step record of the runs (of ``asset_id``, if given) with a step finished in [start, end)."""
        runs = (f"SELECT DISTINCT workflow_id FROM {self.db}.workflow_steps WHERE finished_at >= %(start)s "
                "AND finished_at < %(end)s AND startsWith(workflow_id, %(prefix)s)")
        return self._select("workflow_steps", WorkflowStepRow, f"workflow_id IN ({runs})",
                            {"start": start, "end": end, "prefix": f"{asset_id}@" if asset_id else ""},
                            "ORDER BY finished_at")

    def run_bids(self, workflow_ids: list[str]) -> list[BidRow]:
        """The accepted curves the runs ``workflow_ids`` submitted."""
        if not workflow_ids:
            return []
        return self._select("bids", BidRow, "workflow_id IN %(ids)s", {"ids": workflow_ids})

    def put_backtest(self, row: BacktestReportRow) -> None:
        """Keep a backtest's report (``vpp backtest``)."""
        self._insert("backtest_reports", [row])

    def backtests(self) -> list[BacktestReportRow]:
        """Every kept backtest report, newest first."""
        return self._select("backtest_reports", BacktestReportRow, "1", {}, "ORDER BY ran_at DESC, report_id")

    def backtest(self, report_id: str) -> BacktestReportRow | None:
        """One kept backtest report, if there is one of that id."""
        found = self._select("backtest_reports", BacktestReportRow, "report_id = %(id)s", {"id": report_id})
        return found[0] if found else None
