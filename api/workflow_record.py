"""Bidding runs as the workers recorded them: one summary per run from its step records and bids.

The orchestrator's journal (``workflow.events``) is the run's own account; the API reads the
ClickHouse record the workers and the market keep (``workflow_steps``, ``bids``), which answers
"which runs happened, how did they end, which ones fell back" without reading a topic.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from core.rows import BidRow, WorkflowStepRow

SAFE_BID_STEP = "safe_bid"  # bidding.workflow.SAFE_BID (the API reads the record, not the logic)
SUBMIT_STEP = "submit"
State = Literal["submitted", "failed", "running"]


@dataclass(frozen=True, slots=True)
class RunRecord:
    """What the record says about one run (see :class:`api.models.WorkflowPublic`)."""

    workflow_id: str
    asset_id: str
    interval_start: datetime | None
    state: State
    safe_bid: bool
    flags: list[str]
    steps: int
    errors: int
    started_at: datetime
    finished_at: datetime
    note: str


def parse_id(workflow_id: str) -> tuple[str, datetime | None]:
    """The asset and interval a run id names (``asset@YYYYmmddTHHMMZ#rebid``, vpp.bid_runs.workflow_id)."""
    asset, _, rest = workflow_id.partition("@")
    try:
        return asset, datetime.strptime(rest.partition("#")[0], "%Y%m%dT%H%MZ").replace(tzinfo=UTC)
    except ValueError:
        return asset, None


def summarise(steps: Iterable[WorkflowStepRow], bids: Iterable[BidRow]) -> list[RunRecord]:
    """One record per run among ``steps``, newest first; a bid's note joins its run's flags."""
    by_run: dict[str, list[WorkflowStepRow]] = defaultdict(list)
    for row in steps:
        by_run[row.workflow_id].append(row)
    notes = {bid.workflow_id: bid.note for bid in bids if bid.note}
    out = []
    for workflow_id, rows in by_run.items():
        rows.sort(key=lambda r: r.finished_at)
        asset, interval = parse_id(workflow_id)
        failed = [r for r in rows if r.error is not None]
        submitted = any(r.step == SUBMIT_STEP and r.output is not None for r in rows)
        state: State = "submitted" if submitted else "failed" if rows[-1].error is not None else "running"
        safe = any(r.step == SAFE_BID_STEP for r in rows)
        note = notes.get(workflow_id, "")
        flags = [*(["safe bid"] if safe else []),
                 *sorted({f"retried {r.step}" for r in rows if r.attempt > 1}),
                 *[f"{r.step} attempt {r.attempt}: {r.error}" for r in failed],
                 *([note] if note and not (safe and note.startswith("safe bid")) else [])]
        out.append(RunRecord(workflow_id, asset, interval, state, safe or note.startswith("safe bid"), flags,
                             len(rows), len(failed), rows[0].finished_at, rows[-1].finished_at, note))
    return sorted(out, key=lambda r: (r.finished_at, r.workflow_id), reverse=True)
