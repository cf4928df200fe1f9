"""The Autobidder on the real stack: the orchestrator dataflow and workers as processes, SIGKILLed.

The session's stack (broker, Redis, history server), the orchestrator (``dataflows.bidding``,
recovery store, 1 s snapshots) and ``vpp bid worker`` processes, real SMARD prices replayed onto
today's calendar. What every run must show, however it was interrupted:

- exactly one bid per interval: the market's book (``bids``) holds one curve per product for the
  run's interval, every row written for it the same curve from the same run;
- no step's result committed twice: each (workflow, step, attempt) recorded once by the workers,
  and each step's output accepted once by the orchestrator (a re-delivered or superseded result is
  journaled as ignored);
- the journal shows each recovery (a ``recovered`` entry per orchestrator restart that resumed the
  run from a snapshot), and replaying it gives the state the run ended in; optimise re-run from the
  stored artifacts gives the stored hash.

The default suite runs one run with an orchestrator kill at a stage boundary and a worker kill
mid-task, and the missing-data run. ``-m slow`` adds kills at every stage boundary, several times:
``pytest -m slow tests/integration/test_bidding_workflow.py``.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from typer.testing import CliRunner

from bench.bidding_stack import BidStack, bid_stack
from bidding import journal
from bidding.artifacts import artifact
from bidding.tasks import RunInputs, market_data
from bidding.workflow import FETCH, OPTIMISE, SUBMIT, Status, Workflow, forecast_step
from core import kafka, keys
from core.bid_history import artifact_row
from core.config import Settings
from core.topics import TELEMETRY_DLQ, WORKFLOW_RESULTS
from schemas import packaged_codec
from vpp.bid_runs import replay_optimise
from vpp.bid_worker import Faults, Worker
from vpp.cli import app
from vpp.dataflows import settings_env

pytestmark = pytest.mark.integration

REGION = "bidtest-DE"
LATE_REGION = "bidtest-DE-late"


@pytest.fixture(scope="module")
def settings(stack_settings: Settings) -> Settings:
    """The session's stack (only these tests use the workflow topics), with short bidding deadlines."""
    return stack_settings.model_copy(update={
        "snapshot_interval_s": 1, "bid_fetch_deadline_s": 4.0, "bid_forecast_deadline_s": 40.0,
        "bid_task_timeout_s": 5.0, "bid_max_attempts": 6})


@pytest.fixture(scope="module")
def stack(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BidStack]:
    # The worker runs forecasts slowly for runs named slow-*: the orchestrator is killed between stages.
    hooks = ("--delay", "forecast=1", "--fault-scope", "slow-")
    with bid_stack(settings, tmp_path_factory.mktemp("bid-procs"), 1, *hooks) as harness:
        harness.publish_prices(REGION)
        # Once this is submitted, the worker has joined its group (its market data may have come too
        # late for the short fetch deadline of these tests: then it is a safe bid).
        warm = harness.request(harness.run_inputs("warm-up", REGION))
        state = harness.wait_for(warm.workflow_id, timeout_s=120)
        assert state.status is Status.SUBMITTED, (state, _logs(harness))
        yield harness


def _logs(harness: BidStack) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(harness.workdir.glob("*.log")))


def _wait(harness: BidStack, condition: Callable[[], bool], timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting\n{_logs(harness)}"
        time.sleep(0.2)


def _check_run(harness: BidStack, ident: str, run: RunInputs) -> tuple[Workflow, list[journal.Entry]]:
    """The guarantees every run keeps, however it was interrupted; its final state and journal."""
    state = harness.wait_for(ident, timeout_s=150)
    assert state.status is Status.SUBMITTED, (state, _logs(harness))
    entries = harness.entries(ident)
    lived = journal.effective(entries)
    assert [e.seq for e in lived] == list(range(len(lived))), "the journal reads as one unbroken sequence"

    # Exactly one bid per interval, every row written for it the same curve from this run.
    bids = harness.store.bids(run.asset_id, run.interval_start, run.interval_start + timedelta(seconds=1))
    assert sorted(b.product for b in bids) == sorted({b.product for b in bids}) and bids
    raw = harness.client.query(
        f"SELECT product, workflow_id, bands_json FROM {harness.settings.clickhouse_database}.bids "
        "WHERE asset_id = %(a)s AND interval_start = %(t)s",
        parameters={"a": run.asset_id, "t": run.interval_start}).result_rows
    assert {(r[1], r[0], r[2]) for r in raw} == {(ident, b.product, b.bands_json) for b in bids}

    # No step's result committed twice: one worker record per (step, attempt), one accepted output per step.
    records = Counter((s.step, s.attempt) for s in harness.store.steps(ident))
    rows_written = harness.store.step_rows_written(ident)
    assert rows_written == sum(records.values()), "no (workflow, step, attempt) was recorded twice"
    accepted = Counter(t.step for t in state.tasks if t.output)
    assert all(n == 1 for n in accepted.values())
    assert state.output(SUBMIT) is not None
    return state, entries


def _issued(harness: BidStack, ident: str, step: str) -> Callable[[], bool]:
    return lambda: harness.state(ident).task(step) is not None


def _done(harness: BidStack, ident: str, step: str) -> Callable[[], bool]:
    return lambda: harness.state(ident).output(step) is not None


def _recoveries(entries: list[journal.Entry]) -> list[journal.Entry]:
    return [e for e in journal.effective(entries) if e.event_type == journal.RECOVERED]


def test_a_run_survives_an_orchestrator_killed_between_stages(stack: BidStack) -> None:
    run = stack.run_inputs("slow-battery-1", REGION)
    ident = stack.request(run).workflow_id

    # Killed at the fetch -> forecast boundary, after a snapshot holds the fetch's result.
    _wait(stack, _done(stack, ident, FETCH))
    stack.wait_for_snapshots()
    stack.kill_orchestrator()
    stack.start_orchestrator()

    state, entries = _check_run(stack, ident, run)
    _wait(stack, lambda: bool(_recoveries(stack.entries(ident))))
    entries = stack.entries(ident)
    assert len(_recoveries(entries)) == 1, [(e.seq, e.event_type) for e in journal.effective(entries)]
    assert _recoveries(entries)[0].payload["resumed_at_seq"] >= 2, "resumed after the fetch's result"
    assert journal.replay_entries(ident, entries) == state
    assert all(state.output(forecast_step(p)) for p in ("energy", "reserve"))
    assert state.output(OPTIMISE) is not None and not state.flags, state.flags

    # Optimise re-run from the stored artifacts through today's logic: the very same output hash.
    replayed = replay_optimise(stack.store, state)
    assert replayed is not None and replayed.identical


def test_market_data_withheld_past_its_deadline_the_run_completes_on_the_last_good_data_flagged(
        stack: BidStack) -> None:
    now = datetime.now(UTC)
    cut = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
    stack.publish_prices(LATE_REGION, until=cut)  # nothing published for the last three hours
    # The last good market data a previous run fetched for the region.
    earlier = stack.run_inputs("battery-late", LATE_REGION, interval=cut)
    rows = stack.history.market_prices(LATE_REGION, cut - timedelta(days=7), cut)
    last_good = artifact("market", market_data(earlier, [(r.interval_start, r.price_eur_mwh) for r in rows]))
    stack.store.put_artifacts([artifact_row(last_good, "an-earlier-run", FETCH, now)])
    stack.redis.set(keys.bid_last_market(LATE_REGION), last_good.artifact_id)

    run = stack.run_inputs("battery-late", LATE_REGION)
    ident = stack.request(run, fetch_deadline_s=2).workflow_id
    state, _ = _check_run(stack, ident, run)
    fallback = f"market data fallback to {last_good.artifact_id}"
    assert any(f.startswith(fallback) and "late past its deadline" in f for f in state.flags), state.flags
    optimise = state.task(OPTIMISE)
    assert optimise is not None and optimise.inputs[0] == last_good.artifact_id
    fetch = state.task(FETCH)
    assert fetch is not None and fetch.output is None
    assert not any(f.startswith("safe bid") for f in state.flags), "decided on the fallback, not a safe bid"


@pytest.mark.slow
@pytest.mark.parametrize("round_", range(3))
def test_kills_at_every_stage_boundary(stack: BidStack, round_: int) -> None:
    """The orchestrator killed at each boundary and a worker killed mid-task in each stage, several times."""
    for worker in list(stack.workers):
        if worker.poll() is None:
            stack.kill(worker)
    for stage, done in ((FETCH, FETCH), ("forecast", forecast_step("reserve")), ("optimise", OPTIMISE)):
        slow = stack.start_worker("--delay", f"{stage}=4", "--fault-scope", "slow-")
        run = stack.run_inputs(f"slow-battery-{round_}-{stage}", REGION)
        ident = stack.request(run, fetch_deadline_s=60).workflow_id  # however long the worker takes to join
        _wait(stack, _issued(stack, ident, stage if stage != "forecast" else forecast_step("energy")))
        time.sleep(1.5)
        stack.kill(slow)  # mid-task
        stack.start_worker()
        _wait(stack, _done(stack, ident, done))
        stack.wait_for_snapshots()  # a snapshot holds the stage's result
        stack.kill_orchestrator()  # at the boundary after the stage
        stack.start_orchestrator()
        _wait(stack, lambda: bool(_recoveries(stack.entries(ident))))  # noqa: B023 - waited on here
        state, entries = _check_run(stack, ident, run)
        assert journal.replay_entries(ident, entries) == state
        for worker in list(stack.workers):
            if worker.poll() is None:
                stack.kill(worker)
    stack.start_worker()


@pytest.mark.slow
def test_a_run_survives_a_worker_killed_mid_task_and_an_orchestrator_killed(stack: BidStack) -> None:
    for worker in list(stack.workers):
        if worker.poll() is None:
            stack.kill(worker)
    slow = stack.start_worker("--delay", "optimise=6", "--fault-scope", "slow-")
    run = stack.run_inputs("slow-battery-2", REGION)
    ident = stack.request(run, fetch_deadline_s=60).workflow_id  # however long the worker takes to join

    _wait(stack, _done(stack, ident, forecast_step("reserve")))
    stack.wait_for_snapshots()
    stack.kill_orchestrator()  # between forecast and optimise
    stack.start_orchestrator()
    _wait(stack, _issued(stack, ident, OPTIMISE))
    time.sleep(1.0)
    stack.kill(slow)  # mid-optimise; a new worker takes the re-delivered task (and the retry) over
    stack.start_worker()

    state, entries = _check_run(stack, ident, run)
    assert len(_recoveries(entries)) >= 1
    assert journal.replay_entries(ident, entries) == state
    assert state.output(OPTIMISE) is not None, state.flags
    replayed = replay_optimise(stack.store, state)
    assert replayed is not None and replayed.identical


def _records(settings: Settings, topic: str, schema: str, key: bytes) -> list[dict[str, object]]:
    """Every record of ``topic`` under ``key``, decoded."""
    config = kafka.client_config(settings, **{"group.id": "test-reader", "enable.auto.commit": False})
    consumer = Consumer(config)
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), 10)[1] for p in partitions}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions if ends[p] > 0])
        seen: dict[int, int] = {}
        out = []
        deadline = time.monotonic() + 120
        while any(seen.get(p, -1) + 1 < end for p, end in ends.items() if end > 0):
            assert time.monotonic() < deadline, f"{topic} was not read to its end"
            for message in consumer.consume(500, 0.5):
                if message.error() is None:
                    seen[message.partition() or 0] = message.offset() or 0
                    if message.key() == key:
                        out.append(packaged_codec().decode(message.value() or b"", schema))
        return out
    finally:
        consumer.close()


def _task(ident: str, step: str, inputs: list[str]) -> bytes:
    now = datetime.now(UTC)
    return packaged_codec().encode("WorkflowTask", {"workflow_id": ident, "step": step, "attempt": 1,
                                                    "inputs": inputs, "issued_at": now,
                                                    "deadline": now + timedelta(seconds=5)})


def test_a_redelivered_task_is_answered_from_its_record_and_a_bad_result_is_dead_lettered(
        stack: BidStack, settings: Settings) -> None:
    run = stack.run_inputs("direct", REGION)
    inputs = artifact("inputs", run)
    stack.store.put_artifacts([artifact_row(inputs, "direct", "request", datetime.now(UTC))])

    worker = Worker(settings, name="test-worker")
    task = _task("direct-1", FETCH, [inputs.artifact_id])
    worker.handle_value(b"direct-1", task)
    worker.handle_value(b"direct-1", task)  # re-delivered: the worker was killed before committing
    assert worker.done == 1, "done once"
    assert stack.store.step_rows_written("direct-1") == 1
    results = _records(settings, WORKFLOW_RESULTS, "WorkflowResult", b"direct-1")
    assert len(results) == 2 and results[0]["output"] == results[1]["output"] is not None

    broken = Worker(settings, Faults(corrupt=frozenset({FETCH})), name="broken-worker")
    broken.handle_value(b"direct-2", _task("direct-2", FETCH, [inputs.artifact_id]))
    (result,) = _records(settings, WORKFLOW_RESULTS, "WorkflowResult", b"direct-2")
    assert result["output"] is None and str(result["error"]).startswith("result failed its schema")
    (letter,) = _records(settings, TELEMETRY_DLQ, "DeadLetter", b"direct-2")
    assert letter["error_kind"] == "RESULT_SCHEMA" and letter["topic"] == WORKFLOW_RESULTS
    # The orchestrator takes a failed result as a failed attempt and retries (tests/bidding/test_workflow.py).


def test_vpp_bid_run_status_replay_and_backtest(stack: BidStack, settings: Settings,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in settings_env(settings).items():
        monkeypatch.setenv(name, value)
    runner = CliRunner()
    ran = runner.invoke(app, ["bid", "run", "cli-battery", "--region", REGION, "--wait", "60"])
    assert ran.exit_code == 0, ran.output
    requested = next(line for line in ran.output.splitlines() if line.startswith("requested"))
    ident = requested.split()[1].rstrip(":")
    status = runner.invoke(app, ["bid", "status", "--json"])
    assert status.exit_code == 0, status.output
    (row,) = [r for r in json.loads(status.output) if r["workflow_id"] == ident]
    assert row["status"] == "submitted"
    replayed = runner.invoke(app, ["bid", "replay", ident])
    assert replayed.exit_code == 0, replayed.output
    assert "optimise re-run from stored artifacts: identical" in replayed.output
    assert runner.invoke(app, ["bid", "replay", "no-such-run"]).exit_code == 1

    # A backtest of the stored decisions with unchanged logic reproduces every one of them exactly.
    now = datetime.now(UTC)
    window = ["--from", (now - timedelta(hours=1)).isoformat(),
              "--to", (now + timedelta(minutes=1)).isoformat()]
    backtested = runner.invoke(app, ["backtest", *window, "--json"])
    assert backtested.exit_code == 0, backtested.output
    report = json.loads(backtested.output)
    assert ident in {r["workflow_id"] for r in report["runs"]}
    assert report["decisions"] >= 1 and report["changed"] == 0, report

    # With another forecast model: each run re-forecast from its own market data, or the reason it was not.
    daily = json.loads(runner.invoke(app, ["backtest", *window, "--json", "--with-model", "daily"]).output)
    (mine,) = [r for r in daily["runs"] if r["workflow_id"] == ident]
    assert daily["model"] == "daily" and mine["replayed"] and not mine["note"], mine
    assert mine["replayed_revenue_eur"] is not None or mine["stored_revenue_eur"] is None
    mstl = json.loads(runner.invoke(app, ["backtest", *window, "--json", "--with-model", "mstl"]).output)
    (mine,) = [r for r in mstl["runs"] if r["workflow_id"] == ident]
    assert not mine["replayed"] and "mstl cannot forecast" in mine["note"], mine  # 7 days, it needs 14
    assert runner.invoke(app, ["backtest", *window, "--with-model", "oracle"]).exit_code == 2
