"""The workflow figures of ``vpp bench bidding``: per-interval latency and a sustained rebid rate.

On a private local stack, the orchestrator dataflow and two workers (real processes, as in
``vpp up``) run bidding workflows for a 1 MW / 2 MWh battery on the replayed SMARD prices.
Runs are requested at a steady offered rate, as rebids of one interval whose gate closes after
the whole window (each a run of its own: fetch, two forecasts, optimise, submit; the market keeps
the newest curve). Figures:

- ``interval_p50_s`` / ``interval_p99_s``: from the run's start (its fetch issued) to its bid
  submitted (the submit result applied), from the journal's own times;
- ``bids_per_day``: submitted runs per day over the offered window (completions / elapsed);
- ``backlog_end`` / ``backlog_mid``: runs requested but not yet final at the end and at the middle
  of the offered window (a growing backlog would show as end >> mid), and ``interval_p99_late_s``,
  the p99 of the second half's runs (a queue building up would show there first).
"""

from __future__ import annotations

import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from bench.bidding_stack import STEP, BidStack, bid_stack
from bench.local import private_stack
from bidding import journal
from bidding.workflow import FINAL, SUBMIT, Status
from vpp.bid_runs import next_interval, read_journal, runs

REGION = "DE"


def _latency_s(entries: list[journal.Entry]) -> float | None:
    """Start applied (fetch issued) to the submit result applied, in seconds; None if not submitted."""
    lived = journal.effective(entries)
    start = next((e.event_time for e in lived if e.event_type == "start"), None)
    done = next((e.event_time for e in lived if e.event_type == "task_done" and e.step == SUBMIT
                 and e.payload.get("status") == Status.SUBMITTED.value), None)
    return None if start is None or done is None else (done - start).total_seconds()


def _open(harness: BidStack, requested: list[str]) -> int:
    states = runs(harness.entries())
    return sum(1 for ident in requested if ident not in states or states[ident].status not in FINAL)


def measure(runs_wanted: int, rate_per_s: float, workers: int = 2) -> dict[str, float]:
    """Offer ``runs_wanted`` runs at ``rate_per_s``; the latency and throughput figures."""
    with (tempfile.TemporaryDirectory(prefix="vpp-bench-bidding-") as directory,
          private_stack("vpp-bench-bidding-stack-") as base):
        settings = base.model_copy(update={"snapshot_interval_s": 1, "bid_fetch_deadline_s": 20.0,
                                           "bid_forecast_deadline_s": 40.0})
        with bid_stack(settings, Path(directory), workers) as harness:
            harness.publish_prices(REGION)
            warm = harness.request(harness.run_inputs("bench-warm-up", REGION))
            harness.wait_for(warm.workflow_id, timeout_s=180)  # every worker has joined its group
            # One interval whose gate closes after the whole window: every run is a rebid that counts.
            window = timedelta(seconds=runs_wanted / rate_per_s + settings.bid_gate_lead_s
                               + settings.bid_forecast_deadline_s + 120)
            run = harness.run_inputs("bench-battery", REGION,
                                     next_interval(datetime.now(UTC), STEP, window))
            requested: list[str] = []
            first = time.monotonic()
            backlog_mid = 0.0
            for i in range(runs_wanted):
                due = first + i / rate_per_s
                time.sleep(max(0.0, due - time.monotonic()))
                requested.append(harness.request(run, rebid=i).workflow_id)
                if i == runs_wanted // 2:
                    backlog_mid = float(_open(harness, requested))
            offered_s = time.monotonic() - first
            backlog_end = float(_open(harness, requested))
            deadline = time.monotonic() + 300
            while _open(harness, requested) and time.monotonic() < deadline:
                time.sleep(1)
            entries = read_journal(settings)
    by_run: dict[str, list[journal.Entry]] = {}
    for entry in entries:
        by_run.setdefault(entry.workflow_id, []).append(entry)
    latencies = [_latency_s(by_run.get(ident, [])) for ident in requested]
    done = [x for x in latencies if x is not None]
    late = [x for x in latencies[len(latencies) // 2:] if x is not None]
    submitted_times = sorted(max(e.event_time for e in by_run[i]) for i in requested if i in by_run)
    span = (submitted_times[-1] - _first_start(by_run, requested)).total_seconds() if submitted_times else 0.0
    states = runs(entries)
    return {
        "workflow_runs": float(len(requested)),
        "workflow_submitted": float(len(done)),
        "workflow_missed": float(sum(1 for i in requested
                                     if i in states and states[i].status is Status.MISSED)),
        "interval_p50_s": float(np.percentile(done, 50)) if done else float("nan"),
        "interval_p99_s": float(np.percentile(done, 99)) if done else float("nan"),
        "interval_p99_late_s": float(np.percentile(late, 99)) if late else float("nan"),
        "offered_per_day": rate_per_s * 86_400,
        "bids_per_day": len(done) / max(span, offered_s) * 86_400,
        "backlog_mid": backlog_mid,
        "backlog_end": backlog_end,
        "workers": float(workers),
    }


def _first_start(by_run: dict[str, list[journal.Entry]], requested: list[str]) -> datetime:
    return min(e.event_time for i in requested if i in by_run for e in by_run[i])
