"""The workflow journal: what the orchestrator writes on ``workflow.events``, and how to read it back.

Each state change of a run is one entry (a WorkflowEvent record): its ``seq`` (0, 1, ...), the
event applied and the ``now`` it was applied at, in the payload as canonical JSON, with the
status and flags it led to. Folding the entries' events (:func:`replay_entries`) rebuilds the
state exactly, because :func:`bidding.workflow.transition` is pure.

Two more kinds of entry are not events of the run:

- ``requested`` (seq -1): a client asks for a run (``vpp bid run``); the orchestrator reads these
  from the same topic and applies them as :class:`~bidding.workflow.Start`.
- ``recovered``: the orchestrator resumed the run from a snapshot after a crash; the payload says
  which seq it resumed at and which orchestrator incarnation it is.

A crash between two snapshots makes the orchestrator redo the entries after the last snapshot:
the topic then holds a tail that was abandoned, followed by the entries the resumed run wrote
from the same seq on. :func:`effective` reads the journal the way the orchestrator lived it: an
entry with a seq not after the previous one cuts the entries from that seq on (as a log does
when its leader rewinds).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bidding.artifacts import canonical
from bidding.workflow import Event, Start, TaskDone, TaskFailed, Wake, Workflow, transition

REQUESTED = "requested"
RECOVERED = "recovered"
#: The event_type of an applied event, by its class.
EVENT_TYPES: dict[type, str] = {Start: "start", TaskDone: "task_done", TaskFailed: "task_failed",
                                Wake: "wake"}


@dataclass(frozen=True, slots=True)
class Entry:
    """One journal record as read back: its seq, type, the time it was written and its payload."""

    workflow_id: str
    seq: int
    event_type: str
    event_time: datetime
    payload: dict[str, Any]
    step: str = ""
    artifact_id: str | None = None


def step_of(event: Event) -> str:
    """The step an event concerns (``start`` / ``wake`` for those)."""
    return event.step if isinstance(event, TaskDone | TaskFailed) else EVENT_TYPES[type(event)]


def event_payload(event: Event, now: datetime, state: Workflow) -> str:
    """The payload of an applied event: the event, its ``now``, and the status and flags it led to."""
    return canonical({"now": now, "event": event, "status": state.status.value, "flags": state.flags,
                      "ignored": state.ignored}).decode()


def request_payload(start: Start) -> str:
    """The payload of a ``requested`` entry: the Start to apply."""
    return canonical({"event": start}).decode()


def _time(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise ValueError(f"naive time {text!r} in the journal")
    return value


def event_of(raw: dict[str, Any]) -> Event:
    """The event a payload's ``event`` object describes."""
    kind = raw.get("__type__")
    if kind == "Start":
        return Start(raw["workflow_id"], _time(raw["interval_start"]), _time(raw["fetch_deadline"]),
                     _time(raw["forecast_deadline"]), _time(raw["gate_closure"]), tuple(raw["products"]),
                     tuple(raw["inputs"]), raw["last_good_market"], int(raw["max_attempts"]),
                     float(raw["task_timeout_s"]))
    if kind == "TaskDone":
        return TaskDone(raw["workflow_id"], raw["step"], int(raw["attempt"]), raw["output"])
    if kind == "TaskFailed":
        return TaskFailed(raw["workflow_id"], raw["step"], int(raw["attempt"]), raw["error"])
    if kind == "Wake":
        return Wake(raw["workflow_id"])
    raise ValueError(f"not a workflow event: {kind!r}")


def applied(entry: Entry) -> tuple[datetime, Event] | None:
    """(now, event) of an entry that applied an event; None for requests and recoveries."""
    if entry.event_type not in EVENT_TYPES.values():
        return None
    return _time(entry.payload["now"]), event_of(entry.payload["event"])


def effective(entries: Iterable[Entry]) -> list[Entry]:
    """The run's journal as lived: requests dropped, each rewound tail replaced by what followed it."""
    kept: list[Entry] = []
    for entry in entries:
        if entry.event_type == REQUESTED:
            continue
        while kept and kept[-1].seq >= entry.seq:
            kept.pop()
        kept.append(entry)
    return kept


def replay_entries(workflow_id: str, entries: Iterable[Entry]) -> Workflow:
    """The state the orchestrator had after the journal's last entry (read in topic order)."""
    state = Workflow(workflow_id)
    for entry in effective(entries):
        pair = applied(entry)
        if pair is not None:
            state, _ = transition(state, pair[1], pair[0])
    return state


def loads(payload_json: str) -> dict[str, Any]:
    """A payload as a dict (an empty payload reads as ``{}``)."""
    value = json.loads(payload_json) if payload_json else {}
    if not isinstance(value, dict):
        raise ValueError("a journal payload is a JSON object")
    return value
