"""The bidding workflow as a pure state machine: ``transition(state, event, now) -> (state, commands)``.

Stages: ``fetch`` (market data) -> ``forecast:<product>`` (one task per market product, all
accumulated) -> ``optimise`` (needs fetch and every forecast) -> ``submit``. The orchestrator
feeds events (the start, task results, timer wake-ups) in order and journals each with the
``now`` it used, so folding the journal rebuilds the state exactly (:func:`replay`); the
commands it returns (run a task, wake me at) are its only effects.

Rules this module owns:

- A result counts only for the attempt in flight of a step not yet done: a duplicate, or a
  late result of an attempt that was superseded by a retry, is ignored (and counted).
- A failed or timed-out task is retried up to ``max_attempts``.
- Market data not in by ``fetch_deadline``: the run goes on with the last good market data
  (``Start.last_good_market``), flagged; with none, a safe bid.
- No forecast (a product's forecast failed every attempt, or none by ``forecast_deadline``):
  a safe bid that holds the state of charge (step ``safe_bid``), with the reason.
- Nothing is submitted at or after ``gate_closure``: the run ends ``missed`` instead.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

FETCH = "fetch"
OPTIMISE = "optimise"
SAFE_BID = "safe_bid"
SUBMIT = "submit"


def forecast_step(product: str) -> str:
    """The step name of one product's forecast task."""
    return f"forecast:{product}"


class Status(StrEnum):
    """Where a workflow is; the last three are final."""

    PENDING = "pending"
    RUNNING = "running"
    SUBMITTED = "submitted"
    MISSED = "missed"
    FAILED = "failed"


FINAL = frozenset({Status.SUBMITTED, Status.MISSED, Status.FAILED})


# ---------------------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class Start:
    """Begin the run that bids for one interval; times are UTC-aware.

    ``inputs`` are artifact ids every decision step reads (the asset's availability, its state of
    charge); ``last_good_market`` is the newest market-data artifact a previous run fetched.
    """

    workflow_id: str
    interval_start: datetime
    fetch_deadline: datetime
    forecast_deadline: datetime
    gate_closure: datetime
    products: tuple[str, ...]
    inputs: tuple[str, ...] = ()
    last_good_market: str | None = None
    max_attempts: int = 3
    task_timeout_s: float = 30.0


@dataclass(frozen=True, slots=True)
class TaskDone:
    """A worker's result: the output artifact id of ``step`` at ``attempt``."""

    workflow_id: str
    step: str
    attempt: int
    output: str


@dataclass(frozen=True, slots=True)
class TaskFailed:
    """A worker's failure (or a result that failed its schema) of ``step`` at ``attempt``."""

    workflow_id: str
    step: str
    attempt: int
    error: str


@dataclass(frozen=True, slots=True)
class Wake:
    """A timer fired (``notify_at``): deadlines and task time-outs are checked against ``now``."""

    workflow_id: str


Event = Start | TaskDone | TaskFailed | Wake


# ---------------------------------------------------------------------------------------- commands


@dataclass(frozen=True, slots=True)
class RunTask:
    """Put a task on ``workflow.tasks`` for the worker pool."""

    workflow_id: str
    step: str
    attempt: int
    inputs: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class WakeAt:
    """Ask for a :class:`Wake` at ``at`` (the next deadline or task time-out)."""

    workflow_id: str
    at: datetime


Command = RunTask | WakeAt


# ---------------------------------------------------------------------------------------- state


@dataclass(frozen=True, slots=True)
class Task:
    """One step's current attempt: ``output`` once done, ``failed`` once out of attempts."""

    step: str
    attempt: int
    inputs: tuple[str, ...]
    issued_at: datetime
    output: str | None = None
    failed: bool = False


@dataclass(frozen=True, slots=True)
class Workflow:
    """The whole state of one run: small, immutable, picklable (the orchestrator snapshots it)."""

    workflow_id: str
    status: Status = Status.PENDING
    start: Start | None = None
    tasks: tuple[Task, ...] = ()
    flags: tuple[str, ...] = ()
    ignored: int = 0

    def task(self, step: str) -> Task | None:
        """The current attempt of ``step``, if it was ever issued."""
        return next((t for t in self.tasks if t.step == step), None)

    def output(self, step: str) -> str | None:
        """The output artifact of ``step`` once done."""
        task = self.task(step)
        return task.output if task else None


Transition = tuple[Workflow, list[Command]]


def _with_task(state: Workflow, task: Task) -> Workflow:
    others = tuple(t for t in state.tasks if t.step != task.step)
    return replace(state, tasks=(*others, task))


def _issue(state: Workflow, step: str, inputs: tuple[str, ...], now: datetime,
           attempt: int = 1) -> Transition:
    task = Task(step, attempt, inputs, now)
    return _with_task(state, task), [RunTask(state.workflow_id, step, attempt, inputs)]


def _flag(state: Workflow, reason: str) -> Workflow:
    return replace(state, flags=(*state.flags, reason))


def _spec(state: Workflow) -> Start:
    if state.start is None:
        raise ValueError(f"workflow {state.workflow_id} has not started")
    return state.start


def _market(state: Workflow) -> str | None:
    """The market data the run decides on: the fetched artifact, or the fallback once flagged."""
    fetched = state.output(FETCH)
    if fetched is not None:
        return fetched
    return _spec(state).last_good_market if any(f.startswith("market data") for f in state.flags) else None


def _safe_bid(state: Workflow, reason: str, now: datetime) -> Transition:
    if state.task(SAFE_BID) is not None:
        return state, []
    spec = _spec(state)
    market = _market(state)
    inputs = (*((market,) if market else ()), *spec.inputs)
    return _issue(_flag(state, f"safe bid: {reason}"), SAFE_BID, inputs, now)


def _submit(state: Workflow, bid: str, now: datetime) -> Transition:
    if now >= _spec(state).gate_closure:
        return replace(_flag(state, "gate closed before the bid was ready"), status=Status.MISSED), []
    return _issue(state, SUBMIT, (bid, *_spec(state).inputs), now)  # the inputs name the market region


def _start_forecasts(state: Workflow, market: str, now: datetime) -> Transition:
    commands: list[Command] = []
    spec = _spec(state)
    for product in spec.products:  # a forecast reads the market data and the run's inputs (its interval)
        state, issued = _issue(state, forecast_step(product), (market, *spec.inputs), now)
        commands += issued
    return state, commands


def _after_done(state: Workflow, step: str, now: datetime) -> Transition:
    """What finishing ``step`` unlocks."""
    spec = _spec(state)
    if step == FETCH:
        if any(t.step.startswith("forecast:") for t in state.tasks):
            return state, []  # already running on the fallback: a late fetch changes nothing
        output = state.output(FETCH)
        assert output is not None
        return _start_forecasts(state, output, now)
    if step.startswith("forecast:"):
        forecasts = [state.output(forecast_step(p)) for p in spec.products]
        market = _market(state)
        if any(f is None for f in forecasts) or market is None or state.task(SAFE_BID) is not None:
            return state, []
        return _issue(state, OPTIMISE, (market, *(f for f in forecasts if f), *spec.inputs), now)
    if step in (OPTIMISE, SAFE_BID):
        if state.task(SUBMIT) is not None:
            return state, []
        output = state.output(step)
        assert output is not None
        return _submit(state, output, now)
    if step == SUBMIT:
        return replace(state, status=Status.SUBMITTED), []
    raise ValueError(f"unknown step {step!r}")


def _out_of_attempts(state: Workflow, task: Task, error: str, now: datetime) -> Transition:
    state = _with_task(state, replace(task, failed=True))
    reason = f"{task.step} failed {task.attempt} time(s): {error}"
    if task.step == FETCH:
        return _fallback(state, reason, now)
    if task.step.startswith("forecast:") or task.step == OPTIMISE:
        return _safe_bid(state, f"no {task.step.split(':')[0]} ({reason})", now)
    return replace(_flag(state, reason), status=Status.FAILED), []


def _fallback(state: Workflow, reason: str, now: datetime) -> Transition:
    """Market data is not coming in time: decide on the last good data, flagged, or bid safe."""
    spec = _spec(state)
    if spec.last_good_market is None:
        return _safe_bid(state, f"no market data ({reason})", now)
    state = _flag(state, f"market data fallback to {spec.last_good_market} ({reason})")
    return _start_forecasts(state, spec.last_good_market, now)


def _retry(state: Workflow, task: Task, error: str, now: datetime) -> Transition:
    spec = _spec(state)
    if task.step == FETCH and now >= spec.fetch_deadline:  # no more asking: the run stops waiting for it
        state = _with_task(state, replace(task, failed=True))
        deadline = spec.fetch_deadline.isoformat()
        return _fallback(state, f"market data late past its deadline {deadline} ({error})", now)
    if task.attempt >= spec.max_attempts or now >= spec.gate_closure:
        return _out_of_attempts(state, task, error, now)
    return _issue(state, task.step, task.inputs, now, task.attempt + 1)


def _current(state: Workflow, step: str, attempt: int) -> Task | None:
    """The task a result may count for: in flight (not done, not failed) and this very attempt."""
    task = state.task(step)
    if task is None or task.attempt != attempt or task.output is not None or task.failed:
        return None
    return task


def _on_wake(state: Workflow, now: datetime) -> Transition:
    spec = _spec(state)
    commands: list[Command] = []
    if now >= spec.gate_closure and state.task(SUBMIT) is None:
        return replace(_flag(state, "gate closed before the bid was ready"), status=Status.MISSED), []
    fetch = state.task(FETCH)
    started_forecasts = any(t.step.startswith("forecast:") for t in state.tasks)
    if now >= spec.fetch_deadline and not started_forecasts and state.task(SAFE_BID) is None:
        if fetch is not None and fetch.output is None:
            state = _with_task(state, replace(fetch, failed=True))
        return _fallback(state, f"market data late past its deadline {spec.fetch_deadline.isoformat()}", now)
    if now >= spec.forecast_deadline and state.task(OPTIMISE) is None and state.task(SAFE_BID) is None:
        missing = [p for p in spec.products if state.output(forecast_step(p)) is None]
        if missing:
            return _safe_bid(state, f"no forecast for {', '.join(missing)} by "
                                    f"{spec.forecast_deadline.isoformat()}", now)
    for task in state.tasks:
        overdue = (now - task.issued_at).total_seconds() >= spec.task_timeout_s
        if task.output is None and not task.failed and overdue:
            state, issued = _retry(state, task, "timed out", now)
            commands += issued
            if state.status in FINAL:
                break
    return state, commands


def next_wake(state: Workflow) -> datetime | None:
    """The earliest time something can change without a result: a deadline or a task time-out."""
    if state.status in FINAL or state.start is None:
        return None
    spec = state.start
    times = [] if state.task(SUBMIT) else [spec.gate_closure]  # once submitted, the market judges lateness
    deciding = state.task(SAFE_BID) is not None or any(t.step.startswith("forecast:") for t in state.tasks)
    if not deciding:
        times.append(spec.fetch_deadline)
    if state.task(OPTIMISE) is None and state.task(SAFE_BID) is None:
        times.append(spec.forecast_deadline)
    times += [t.issued_at + timedelta(seconds=spec.task_timeout_s)
              for t in state.tasks if t.output is None and not t.failed]
    return min(times) if times else None


def transition(state: Workflow, event: Event, now: datetime) -> Transition:
    """Apply ``event`` at ``now``: the new state and the commands to carry out, plus the next wake-up."""
    if event.workflow_id != state.workflow_id:
        raise ValueError(f"event for {event.workflow_id} sent to workflow {state.workflow_id}")
    if state.status in FINAL:
        return replace(state, ignored=state.ignored + 1) if not isinstance(event, Wake) else state, []
    commands: list[Command]
    if isinstance(event, Start):
        if state.status is not Status.PENDING:
            return replace(state, ignored=state.ignored + 1), []
        state = replace(state, status=Status.RUNNING, start=event)
        state, commands = _issue(state, FETCH, event.inputs, now)
    elif state.start is None:
        return replace(state, ignored=state.ignored + 1), []
    elif isinstance(event, TaskDone):
        task = _current(state, event.step, event.attempt)
        if task is None:
            return replace(state, ignored=state.ignored + 1), []
        state = _with_task(state, replace(task, output=event.output))
        state, commands = _after_done(state, event.step, now)
    elif isinstance(event, TaskFailed):
        task = _current(state, event.step, event.attempt)
        if task is None:
            return replace(state, ignored=state.ignored + 1), []
        state, commands = _retry(state, task, event.error, now)
    else:
        state, commands = _on_wake(state, now)
    wake = next_wake(state)
    if wake is not None:
        commands.append(WakeAt(state.workflow_id, wake))
    return state, commands


def replay(workflow_id: str, journal: Iterable[tuple[datetime, Event]]) -> Workflow:
    """Fold a journal of (now, event) pairs: the state the orchestrator had after the last one."""
    state = Workflow(workflow_id)
    for now, event in journal:
        state, _ = transition(state, event, now)
    return state
