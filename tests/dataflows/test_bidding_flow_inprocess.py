"""The bidding orchestrator's own wiring in this process (TestingSource in, TestingSink out), and its logic.

A requested run and the workers' results go in as real Kafka messages with real Avro; what comes
out is the journal on ``workflow.events`` and the tasks on ``workflow.tasks``. The logic is also
driven directly: a snapshot restored journals a ``recovered`` entry; a result for a run it never
started is dropped, not journaled.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from bytewax.testing import TestingSink, TestingSource, run_main
from confluent_kafka import Message

from bidding import journal
from bidding.workflow import FETCH, OPTIMISE, SUBMIT, Start, Status, TaskDone, forecast_step
from core.config import Settings
from core.topics import TELEMETRY_DLQ, WORKFLOW_EVENTS, WORKFLOW_RESULTS, WORKFLOW_TASKS
from dataflows.bidding import build_flow
from dataflows.bidding_steps import WorkflowLogic
from operators.kafka_batches import Polled
from operators.records import KafkaOut
from schemas import packaged_codec

WF = "battery@20261201T1000Z#0"
CODEC = packaged_codec()


def _start(now: datetime) -> Start:
    return Start(WF, now + timedelta(hours=1), now + timedelta(seconds=20), now + timedelta(seconds=40),
                 now + timedelta(minutes=55), ("energy", "reserve"), ("inputs-1",), None, 3, 10.0)


def _message(topic: str, key: bytes, value: bytes, offset: int) -> Message:
    return Message(topic=topic, partition=0, offset=offset, key=key, value=value, timestamp=(1, 0))


def _request(start: Start, offset: int) -> Message:
    value = CODEC.encode("WorkflowEvent", {
        "workflow_id": start.workflow_id, "seq": -1, "step": "start", "event_type": journal.REQUESTED,
        "event_time": datetime.now(UTC), "payload_json": journal.request_payload(start), "artifact_id": None})
    return _message(WORKFLOW_EVENTS, start.workflow_id.encode(), value, offset)


def _result(step: str, output: str, offset: int, key: bytes = WF.encode()) -> Message:
    value = CODEC.encode("WorkflowResult", {"workflow_id": WF, "step": step, "attempt": 1, "output": output,
                                            "error": None, "worker": "test", "event_time": datetime.now(UTC)})
    return _message(WORKFLOW_RESULTS, key, value, offset)


def _input(now: datetime) -> Iterator[Polled]:
    yield Polled(WORKFLOW_EVENTS, 0, [_request(_start(now), 0)])
    results = [_result(FETCH, "market-1", 0), _result(forecast_step("energy"), "fe", 1),
               _result(forecast_step("reserve"), "fr", 2), _result(OPTIMISE, "bid-1", 3),
               _result(SUBMIT, "receipt", 4), _result(SUBMIT, "receipt", 5),  # the same result again
               _message(WORKFLOW_RESULTS, WF.encode(), b"\x01garbage", 6),
               _result(OPTIMISE, "other", 7, key=b"another-run")]
    for message in results:
        yield Polled(WORKFLOW_RESULTS, 0, [message])


def _decoded(out: list[KafkaOut], topic: str, schema: str) -> list[dict[str, Any]]:
    return [CODEC.decode(m.value or b"", schema) for m in out if m.topic == topic]


def test_the_flow_runs_a_workflow_journals_every_change_and_dead_letters_bad_results(tmp_path: Any) -> None:
    out: list[KafkaOut] = []
    run_main(build_flow(Settings(data_dir=tmp_path), TestingSource(_input(datetime.now(UTC))),  # type: ignore[no-untyped-call]
                        TestingSink(out)))
    tasks = _decoded(out, WORKFLOW_TASKS, "WorkflowTask")
    assert [(t["step"], t["attempt"]) for t in tasks] == [
        (FETCH, 1), (forecast_step("energy"), 1), (forecast_step("reserve"), 1), (OPTIMISE, 1), (SUBMIT, 1)]
    assert tasks[3]["inputs"] == ["market-1", "fe", "fr", "inputs-1"], "reads fetch and every forecast"
    assert all(t["deadline"] > t["issued_at"] for t in tasks)

    events = _decoded(out, WORKFLOW_EVENTS, "WorkflowEvent")
    entries = [journal.Entry(e["workflow_id"], e["seq"], e["event_type"], e["event_time"],
                             journal.loads(e["payload_json"]), e["step"], e["artifact_id"]) for e in events]
    assert [e.seq for e in entries] == list(range(7))
    assert [e.event_type for e in entries] == ["start"] + ["task_done"] * 6
    assert entries[-1].payload["ignored"] == 1, "the repeated submit result is journaled as ignored"
    state = journal.replay_entries(WF, entries)
    assert state.status is Status.SUBMITTED and state.output(SUBMIT) == "receipt" and state.ignored == 1

    letters = _decoded(out, TELEMETRY_DLQ, "DeadLetter")
    assert sorted(d["error_kind"] for d in letters) == ["KEY_MISMATCH", "WRONG_MAGIC"]


def test_a_run_restored_from_its_snapshot_journals_its_recovery_first() -> None:
    now = datetime.now(UTC)
    logic = WorkflowLogic.build(None)
    out, _ = logic.on_batch([_start(now)])
    assert len(out) == 2  # the journal entry and the fetch task
    resumed = WorkflowLogic.build(logic.snapshot())
    assert resumed.notify_at() is not None and resumed.notify_at() <= datetime.now(UTC)  # type: ignore[operator]
    recovered, _ = resumed.on_notify()
    (entry,) = _decoded(recovered, WORKFLOW_EVENTS, "WorkflowEvent")
    assert (entry["seq"], entry["event_type"]) == (1, journal.RECOVERED)
    assert journal.loads(entry["payload_json"])["resumed_at_seq"] == 1
    more, _ = resumed.on_batch([TaskDone(WF, FETCH, 1, "market-1")])
    assert [e["seq"] for e in _decoded(more, WORKFLOW_EVENTS, "WorkflowEvent")] == [2]
    assert len(_decoded(more, WORKFLOW_TASKS, "WorkflowTask")) == 2


def test_a_result_for_a_run_never_started_is_dropped_not_journaled() -> None:
    logic = WorkflowLogic.build(None)
    out, keep = logic.on_batch([TaskDone(WF, FETCH, 1, "market-1")])
    assert out == [] and keep == logic.DISCARD
