"""The Bytewax face of :mod:`bidding.workflow`: the orchestrator's steps, one workflow per key.

It lives in the parts layer beside the flow, because ``operators/`` and ``bidding/`` are siblings
that may not import each other.

``decode`` turns polled records into workflow events keyed by workflow id: a ``requested``
entry on ``workflow.events`` (a client asking for a run, :mod:`bidding.journal`) becomes a
:class:`~bidding.workflow.Start`, a WorkflowResult on ``workflow.results`` a
:class:`~bidding.workflow.TaskDone` or :class:`~bidding.workflow.TaskFailed`. A record that does
not decode, or comes under another workflow's key, goes to ``telemetry.dlq`` with the reason; the
task it answered times out and is retried.

``orchestrate`` keeps one :class:`WorkflowLogic` per workflow id. It applies each event with the
wall clock as ``now`` through :func:`bidding.workflow.transition`, journals every state change on
``workflow.events`` (seq, event, ``now``, the status it led to), puts each ``RunTask`` on
``workflow.tasks`` and asks Bytewax for a wake-up (``notify_at``) at the next deadline or task
time-out. Bytewax recovery snapshots the run (the Workflow, the next seq, the wake-up); a logic
rebuilt from a snapshot journals a ``recovered`` entry before anything else, so the journal shows
every recovery. The snapshot is taken at epoch ends, so a crash redoes the epoch it was in: the
same state, hence the same tasks with the same (workflow, step, attempt), which the worker pool
answers once (``vpp/bid_worker.py``); a duplicate or superseded result is ignored by the state
machine. A finished run is kept an hour after its gate closure (so a late result is still seen
as late) and then dropped.
"""

from __future__ import annotations

import logging
import os
import pickle
import socket
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import bytewax.operators as op
from bytewax.connectors.kafka import KafkaSinkMessage
from bytewax.dataflow import Stream
from bytewax.operators import KeyedStream, StatefulBatchLogic
from prometheus_client import Counter
from typing_extensions import override

from bidding import journal
from bidding.artifacts import canonical
from bidding.workflow import (
    FETCH,
    FINAL,
    Event,
    RunTask,
    Start,
    TaskDone,
    TaskFailed,
    Wake,
    WakeAt,
    Workflow,
    transition,
)
from core.topics import WORKFLOW_EVENTS, WORKFLOW_RESULTS, WORKFLOW_TASKS
from operators.kafka_batches import Polled
from operators.records import DLQ_KEY, KafkaOut, codec, dead_letter, decoded
from operators.streams import values_of

CONSUMER = "dataflows.bidding"
#: How long a finished run is kept after its gate closure, so late results are still recognised.
RETAIN_AFTER_GATE = timedelta(hours=1)
STATE_VERSION = 1
#: A wake-up that found nothing due is tried again this much later (never a busy loop).
IDLE_WAKE = timedelta(seconds=1)
log = logging.getLogger(__name__)

IGNORED = Counter("vpp_workflow_results_ignored_total",
                  "Workflow results ignored as duplicate, superseded or late")

#: This process's incarnation, named in the journal's ``recovered`` entries.
INCARNATION = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def decode_workflow(polls: list[Polled]) -> list[tuple[str, Event | KafkaOut]]:
    """Requests and results keyed by workflow id; what cannot be read goes to the dead letters."""
    out: list[tuple[str, Event | KafkaOut]] = []

    def reject(_: str, letter: KafkaOut) -> None:
        out.append((DLQ_KEY, letter))

    for poll in polls:
        results = poll.topic == WORKFLOW_RESULTS
        for msg, record in decoded(poll, "WorkflowResult" if results else "WorkflowEvent", CONSUMER, reject):
            ident = record["workflow_id"]
            key = msg.key()
            if key is not None and key != ident.encode():
                reason = f"record of {ident!r} under key {key!r}"
                out.append((DLQ_KEY, dead_letter(msg, "KEY_MISMATCH", reason, CONSUMER)))
                continue
            if results:
                step, attempt, output = record["step"], record["attempt"], record["output"]
                event: Event = (TaskDone(ident, step, attempt, output) if output is not None
                                else TaskFailed(ident, step, attempt, record["error"] or "failed"))
                out.append((ident, event))
            elif record["event_type"] == journal.REQUESTED:
                try:
                    start = journal.event_of(journal.loads(record["payload_json"])["event"])
                    if not isinstance(start, Start) or start.workflow_id != ident:
                        raise ValueError("a request carries the Start of its own workflow")
                except (ValueError, KeyError, TypeError) as exc:
                    out.append((DLQ_KEY, dead_letter(msg, "BAD_REQUEST", str(exc), CONSUMER)))
                    continue
                out.append((ident, start))
    return out


def journal_entry(workflow_id: str, seq: int, event_type: str, step: str, now: datetime, payload: str,
                  artifact_id: str | None = None) -> KafkaOut:
    """One WorkflowEvent for ``workflow.events``, keyed by the workflow."""
    value = codec().encode("WorkflowEvent", {
        "workflow_id": workflow_id, "seq": seq, "step": step, "event_type": event_type,
        "event_time": now, "payload_json": payload, "artifact_id": artifact_id})
    return KafkaSinkMessage(key=workflow_id.encode(), value=value, topic=WORKFLOW_EVENTS)


def task_message(task: RunTask, now: datetime, start: Start) -> KafkaOut:
    """One WorkflowTask for ``workflow.tasks``, keyed by the workflow.

    Its deadline is the attempt's time-out, and for a fetch no later than the fetch deadline: a
    worker asking again for market data that is not in yet stops when the run stops waiting for it.
    """
    deadline = now + timedelta(seconds=start.task_timeout_s)
    if task.step == FETCH:
        deadline = min(deadline, start.fetch_deadline)
    value = codec().encode("WorkflowTask", {
        "workflow_id": task.workflow_id, "step": task.step, "attempt": task.attempt,
        "inputs": list(task.inputs), "issued_at": now, "deadline": deadline})
    return KafkaSinkMessage(key=task.workflow_id.encode(), value=value, topic=WORKFLOW_TASKS)


@dataclass(frozen=True, slots=True)
class RunState:
    """What Bytewax snapshots of one run: the workflow, the next journal seq, the next wake-up."""

    workflow: Workflow
    seq: int
    wake: datetime | None
    version: int = STATE_VERSION


class WorkflowLogic(StatefulBatchLogic[Event, KafkaOut, bytes]):
    """One bidding workflow run: applies its events, journals each change, issues its tasks."""

    def __init__(self, run: RunState, recovered: bool) -> None:
        self.run = run
        self.recovered = recovered

    @classmethod
    def build(cls, resume: bytes | None) -> WorkflowLogic:
        """A new run, or one resumed from its snapshot (which is journaled on the first activation)."""
        if resume is None:
            return cls(RunState(Workflow(""), 0, None), recovered=False)
        run = pickle.loads(resume)
        if not isinstance(run, RunState) or run.version != STATE_VERSION:
            raise ValueError(f"unknown workflow snapshot {type(run).__name__}")
        return cls(run, recovered=True)

    def _recovery(self, now: datetime) -> list[KafkaOut]:
        if not self.recovered:
            return []
        self.recovered = False
        run = self.run
        payload = canonical({"now": now, "incarnation": INCARNATION, "resumed_at_seq": run.seq,
                             "status": run.workflow.status.value}).decode()
        log.warning("workflow %s recovered from its snapshot at seq %d", run.workflow.workflow_id, run.seq)
        self.run = RunState(run.workflow, run.seq + 1, run.wake)
        ident = run.workflow.workflow_id
        return [journal_entry(ident, run.seq, journal.RECOVERED, "recovered", now, payload)]

    def _apply(self, event: Event, now: datetime) -> list[KafkaOut]:
        run = self.run
        state = run.workflow if run.workflow.workflow_id else Workflow(event.workflow_id)
        new, commands = transition(state, event, now)
        if new.start is None:  # a result for a run this orchestrator never started (or long dropped)
            IGNORED.inc()
            log.warning("ignored %s for unknown workflow %s", type(event).__name__, event.workflow_id)
            return []
        if new.ignored > state.ignored:
            IGNORED.inc()
        wake = next((c.at for c in commands if isinstance(c, WakeAt)), None)
        if new.status in FINAL:
            wake = new.start.gate_closure + RETAIN_AFTER_GATE
        tasks = [c for c in commands if isinstance(c, RunTask)]
        if isinstance(event, Wake) and new == state and not tasks:
            if wake is not None and wake <= now:  # nothing is due yet after all: look again shortly
                wake = now + IDLE_WAKE
            self.run = RunState(new, run.seq, wake)
            return []
        artifact = event.output if isinstance(event, TaskDone) else None
        kind = journal.EVENT_TYPES[type(event)]
        out = [journal_entry(new.workflow_id, run.seq, kind, journal.step_of(event), now,
                             journal.event_payload(event, now, new), artifact)]
        out += [task_message(t, now, new.start) for t in tasks]
        self.run = RunState(new, run.seq + 1, wake)
        return out

    @override
    def on_batch(self, values: list[Event]) -> tuple[list[KafkaOut], bool]:
        now = datetime.now(UTC)
        out = self._recovery(now)
        for event in values:
            out += self._apply(event, now)
        return out, self.RETAIN if self.run.workflow.start is not None else self.DISCARD

    @override
    def notify_at(self) -> datetime | None:
        if self.recovered:
            return datetime.now(UTC)
        return self.run.wake

    @override
    def on_notify(self) -> tuple[list[KafkaOut], bool]:
        now = datetime.now(UTC)
        out = self._recovery(now)
        run = self.run
        if run.wake is None or now < run.wake or run.workflow.start is None:
            return out, self.RETAIN
        if run.workflow.status in FINAL:
            return out, self.DISCARD  # kept long enough after its gate closure
        out += self._apply(Wake(run.workflow.workflow_id), now)
        return out, self.RETAIN

    @override
    def snapshot(self) -> bytes:
        return pickle.dumps(self.run, protocol=pickle.HIGHEST_PROTOCOL)


# ---- the steps, as the bidding dataflow wires them --------------------------------------------


@dataclass(frozen=True)
class WorkflowInput:
    """Events keyed by workflow id, and the records that could not be used."""

    events: KeyedStream[Event]
    dead_letters: Stream[KafkaOut]


def decode(step_id: str, polls: Stream[Polled]) -> WorkflowInput:
    """Decode polled requests and results (:func:`decode_workflow`)."""
    decoded = op.flat_map_batch(step_id, polls, decode_workflow)
    return WorkflowInput(op.filter_map(f"{step_id}-events", decoded, _event),
                         values_of(f"{step_id}-dead-letters", decoded, KafkaSinkMessage))


def _event(item: tuple[str, Event | KafkaOut]) -> tuple[str, Event] | None:
    key, value = item
    return None if isinstance(value, KafkaSinkMessage) else (key, value)


def orchestrate(step_id: str, events: KeyedStream[Event]) -> Stream[KafkaOut]:
    """Every run, one per key: journal entries and tasks for Kafka."""
    results: KeyedStream[KafkaOut] = op.stateful_batch(step_id, events, WorkflowLogic.build)
    return values_of(f"{step_id}-kafka", results, KafkaSinkMessage)

