"""The bidding workflow state machine: stages, deadlines, retries, fallbacks, idempotence, replay."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from bidding.artifacts import artifact, canonical
from bidding.workflow import (
    FETCH,
    OPTIMISE,
    SAFE_BID,
    SUBMIT,
    Event,
    RunTask,
    Start,
    Status,
    TaskDone,
    TaskFailed,
    Wake,
    Workflow,
    forecast_step,
    next_wake,
    replay,
    transition,
)

T0 = datetime(2018, 3, 5, 10, 0, tzinfo=UTC)
WF = "wf-1"
PRODUCTS = ("energy", "reserve")


def start(last_good: str | None = "market-old") -> Start:
    return Start(WF, T0 + timedelta(minutes=5), fetch_deadline=T0 + timedelta(seconds=60),
                 forecast_deadline=T0 + timedelta(seconds=120), gate_closure=T0 + timedelta(seconds=180),
                 products=PRODUCTS, inputs=("asset-state",), last_good_market=last_good, task_timeout_s=20)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def run(events: list[tuple[float, Event]]) -> tuple[Workflow, list[RunTask]]:
    state = Workflow(WF)
    tasks: list[RunTask] = []
    for seconds, event in events:
        state, commands = transition(state, event, at(seconds))
        tasks += [c for c in commands if isinstance(c, RunTask)]
    return state, tasks


def happy_path() -> list[tuple[float, Event]]:
    return [(0, start()), (1, TaskDone(WF, FETCH, 1, "market")),
            (2, TaskDone(WF, forecast_step("energy"), 1, "f-energy")),
            (3, TaskDone(WF, forecast_step("reserve"), 1, "f-reserve")),
            (4, TaskDone(WF, OPTIMISE, 1, "bid")), (5, TaskDone(WF, SUBMIT, 1, "receipt"))]


def test_stages_run_in_order_and_optimise_reads_fetch_and_every_forecast() -> None:
    state, tasks = run(happy_path())
    assert [t.step for t in tasks] == [FETCH, "forecast:energy", "forecast:reserve", OPTIMISE, SUBMIT]
    optimise = next(t for t in tasks if t.step == OPTIMISE)
    assert optimise.inputs == ("market", "f-energy", "f-reserve", "asset-state")
    assert state.status is Status.SUBMITTED and state.flags == ()


def test_optimise_waits_for_every_forecast() -> None:
    _, tasks = run(happy_path()[:3])
    assert OPTIMISE not in [t.step for t in tasks]


def test_duplicate_and_late_results_are_ignored() -> None:
    events = happy_path()
    events.insert(2, (1.5, TaskDone(WF, FETCH, 1, "market-again")))  # duplicate
    state, tasks = run(events)
    assert [t.step for t in tasks].count("forecast:energy") == 1
    assert state.output(FETCH) == "market" and state.ignored == 1
    # a retried attempt: the first attempt's late result does not count
    state, tasks = run([(0, start()), (1, TaskFailed(WF, FETCH, 1, "timeout")),
                        (2, TaskDone(WF, FETCH, 1, "stale")), (3, TaskDone(WF, FETCH, 2, "fresh"))])
    assert state.output(FETCH) == "fresh" and state.ignored == 1


def test_failed_tasks_are_retried_up_to_max_attempts() -> None:
    events: list[tuple[float, Event]] = [(0, start()), (1, TaskDone(WF, FETCH, 1, "market"))]
    events += [(2 + a, TaskFailed(WF, forecast_step("energy"), a, "boom")) for a in (1, 2, 3)]
    state, tasks = run(events)
    assert [t.attempt for t in tasks if t.step == "forecast:energy"] == [1, 2, 3]
    # out of attempts: no forecast, so a safe bid with the reason
    assert tasks[-1].step == SAFE_BID and tasks[-1].inputs == ("market", "asset-state")
    assert any("safe bid: no forecast" in f for f in state.flags)


def test_a_timed_out_task_is_reissued_on_wake() -> None:
    _state, tasks = run([(0, start()), (25, Wake(WF))])
    assert [(t.step, t.attempt) for t in tasks] == [(FETCH, 1), (FETCH, 2)]


def test_market_data_late_past_deadline_runs_on_last_good_data_flagged() -> None:
    state, tasks = run([(0, start()), (61, Wake(WF)), (62, TaskDone(WF, FETCH, 1, "too-late")),
                        (63, TaskDone(WF, forecast_step("energy"), 1, "fe")),
                        (64, TaskDone(WF, forecast_step("reserve"), 1, "fr")),
                        (65, TaskDone(WF, OPTIMISE, 1, "bid")), (66, TaskDone(WF, SUBMIT, 1, "ok"))])
    assert next(t for t in tasks if t.step == "forecast:energy").inputs == ("market-old", "asset-state")
    assert next(t for t in tasks if t.step == OPTIMISE).inputs[0] == "market-old"
    assert state.status is Status.SUBMITTED
    assert any(f.startswith("market data fallback to market-old") for f in state.flags)


def test_no_market_data_at_all_gives_a_safe_bid() -> None:
    state, tasks = run([(0, start(last_good=None)), (61, Wake(WF)), (62, TaskDone(WF, SAFE_BID, 1, "hold")),
                        (63, TaskDone(WF, SUBMIT, 1, "ok"))])
    assert [t.step for t in tasks] == [FETCH, SAFE_BID, SUBMIT]
    assert state.status is Status.SUBMITTED and "no market data" in state.flags[0]


def test_no_forecast_by_its_deadline_gives_a_safe_bid() -> None:
    state, tasks = run([(0, start()), (1, TaskDone(WF, FETCH, 1, "m")),
                        (2, TaskDone(WF, forecast_step("energy"), 1, "fe")), (121, Wake(WF)),
                        (122, TaskDone(WF, forecast_step("reserve"), 1, "late"))])
    assert tasks[-1].step == SAFE_BID and OPTIMISE not in [t.step for t in tasks]
    assert "no forecast for reserve" in state.flags[-1]


def test_never_submits_at_or_after_gate_closure() -> None:
    events = [*happy_path()[:4], (180, TaskDone(WF, OPTIMISE, 1, "bid"))]
    state, tasks = run(events)
    assert SUBMIT not in [t.step for t in tasks]
    assert state.status is Status.MISSED
    state, tasks = run([*happy_path()[:4], (181, Wake(WF)), (182, TaskDone(WF, OPTIMISE, 1, "bid"))])
    assert state.status is Status.MISSED and SUBMIT not in [t.step for t in tasks]


def test_artifacts_are_content_addressed_and_canonical() -> None:
    a = artifact("market", {"b": (1.0, 2.5), "a": T0})
    b = artifact("market", {"a": T0, "b": [1.0, 2.5]})
    assert a.artifact_id == b.artifact_id and len(a.artifact_id) == 64
    assert canonical(start()) == canonical(start())
    assert artifact("x", 1.0).artifact_id != artifact("x", 1.0000001).artifact_id


# ---------------------------------------------------------------------------------------- properties

STEPS = (FETCH, forecast_step("energy"), forecast_step("reserve"), OPTIMISE, SAFE_BID, SUBMIT)
events_strategy = st.lists(st.tuples(
    st.floats(0, 200),
    st.one_of(
        st.builds(TaskDone, st.just(WF), st.sampled_from(STEPS), st.integers(1, 3), st.sampled_from("abc")),
        st.builds(TaskFailed, st.just(WF), st.sampled_from(STEPS), st.integers(1, 3), st.just("err")),
        st.builds(Wake, st.just(WF)),
    )), max_size=40)


def _journal(raw: list[tuple[float, Event]]) -> list[tuple[datetime, Event]]:
    times = sorted(t for t, _ in raw)
    return [(at(0), start())] + [(at(t), e) for t, (_, e) in zip(times, raw, strict=True)]


@settings(max_examples=300, deadline=None)
@given(events_strategy, st.integers(0, 40))
def test_replaying_the_journal_after_a_crash_reproduces_state_and_commands(
        raw: list[tuple[float, Event]], crash: int) -> None:
    journal = _journal(raw)
    state, all_commands = Workflow(WF), []
    for now, event in journal:
        state, commands = transition(state, event, now)
        all_commands.append(commands)
    # crash after `crash` events: rebuild from the journal, carry on with the rest
    cut = min(crash, len(journal))
    resumed = replay(WF, journal[:cut])
    resumed_commands = []
    for now, event in journal[cut:]:
        resumed, commands = transition(resumed, event, now)
        resumed_commands.append(commands)
    assert resumed == state
    assert resumed_commands == all_commands[cut:]


@settings(max_examples=300, deadline=None)
@given(events_strategy)
def test_at_most_one_submit_and_never_after_gate_closure(raw: list[tuple[float, Event]]) -> None:
    state, submits = Workflow(WF), []
    for now, event in _journal(raw):
        state, commands = transition(state, event, now)
        submits += [(now, c) for c in commands if isinstance(c, RunTask) and c.step == SUBMIT]
    assert all(now < start().gate_closure for now, _ in submits)
    assert len({c.attempt for _, c in submits}) == len(submits)
    assert len({c.inputs for _, c in submits}) <= 1  # retries resend the same bid
    done = [t for t in state.tasks if t.output is not None]
    assert len({t.step for t in done}) == len(done)


def test_a_fetch_failing_after_its_deadline_is_not_retried_the_run_falls_back() -> None:
    state, tasks = run([(0, start()), (61, TaskFailed(WF, FETCH, 1, "not published yet"))])
    steps = [(t.step, t.attempt) for t in tasks]
    assert steps == [(FETCH, 1), ("forecast:energy", 1), ("forecast:reserve", 1)]
    assert "late past its deadline" in state.flags[0] and "not published yet" in state.flags[0]


def test_no_wake_up_is_asked_for_a_deadline_that_can_no_longer_change_anything() -> None:
    state, _ = run([(0, start(last_good=None)), (61, Wake(WF))])  # no market data: a safe bid
    assert state.task(SAFE_BID) is not None
    assert next_wake(state) == at(61 + 20), "the safe bid's time-out, not the passed fetch deadline"
    state, _ = run([*happy_path()[:-1]])  # submit in flight
    assert next_wake(state) == at(4 + 20), "the submit's time-out; the market judges the gate"
