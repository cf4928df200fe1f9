"""The shaping behind the plan-history and bidding-runs endpoints, on plain rows (no stack)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from api.plan_intervals import planned_intervals
from api.workflow_record import parse_id, summarise
from core.rows import BidRow, SitePlanRow, WorkflowStepRow

T0 = datetime(2030, 1, 1, tzinfo=UTC)
Q = timedelta(minutes=15)


def _plan(plan_id: str, issued: datetime, start: datetime, powers: list[float]) -> SitePlanRow:
    return SitePlanRow("site-1", plan_id, issued, start, 15, powers, None, issued)


def test_each_interval_takes_the_newest_plan_issued_before_it_ended() -> None:
    first = _plan("a", T0 - Q, T0, [1.0, 1.0, 1.0, 1.0])
    # issued during the second interval: revises it and what follows, not the first
    revised = _plan("b", T0 + Q + timedelta(minutes=5), T0 + Q, [-2.0, -2.0, -2.0])
    # issued later still, but only about intervals beyond the range
    late = _plan("c", T0 + 3 * Q, T0 + 10 * Q, [9.0])
    got = planned_intervals([late, revised, first], T0, T0 + 4 * Q)
    assert [(g.interval_start, g.power_kw, g.plan_id) for g in got] == [
        (T0, 1.0, "a"), (T0 + Q, -2.0, "b"), (T0 + 2 * Q, -2.0, "b"), (T0 + 3 * Q, -2.0, "b")]


def test_an_interval_no_plan_was_made_for_in_time_is_left_out() -> None:
    after = _plan("a", T0 + 2 * Q, T0, [5.0, 5.0, 5.0])  # issued after the first two intervals ended
    got = planned_intervals([after], T0, T0 + 3 * Q)
    assert [g.interval_start for g in got] == [T0 + 2 * Q]


def _step(run: str, step: str, attempt: int, seconds: int, error: str | None = None) -> WorkflowStepRow:
    output = None if error else f"{step}-out"
    return WorkflowStepRow(run, step, attempt, output, error, "w", T0 + timedelta(seconds=seconds))


def test_runs_are_summarised_with_their_state_and_fallbacks() -> None:
    ok, safe, broken, going = (f"bess-1@20300101T{h:02d}00Z#0" for h in (10, 11, 12, 13))
    steps = [_step(ok, "fetch", 1, 0), _step(ok, "optimise", 1, 1, "timed out"), _step(ok, "optimise", 2, 2),
             _step(ok, "submit", 1, 3),
             _step(safe, "fetch", 1, 10), _step(safe, "safe_bid", 1, 11), _step(safe, "submit", 1, 12),
             _step(broken, "fetch", 1, 20, "market down"),
             _step(going, "fetch", 1, 30)]
    bids = [BidRow("bess-1", T0, "energy", "DE", safe, "[]", "safe bid: no forecast", "b", T0)]
    runs = {r.workflow_id: r for r in summarise(steps, bids)}
    assert [r.workflow_id for r in summarise(steps, bids)] == [going, broken, safe, ok]  # newest first
    assert (runs[ok].state, runs[ok].safe_bid, runs[ok].errors) == ("submitted", False, 1)
    assert runs[ok].flags == ["retried optimise", "optimise attempt 1: timed out"]
    assert (runs[safe].state, runs[safe].safe_bid, runs[safe].flags) == ("submitted", True, ["safe bid"])
    assert runs[safe].note == "safe bid: no forecast"
    assert runs[broken].state == "failed" and runs[going].state == "running"
    assert runs[ok].asset_id == "bess-1" and runs[ok].interval_start == datetime(2030, 1, 1, 10, tzinfo=UTC)
    assert parse_id("odd-id") == ("odd-id", None)
