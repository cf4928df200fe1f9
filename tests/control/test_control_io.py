"""The control dataflow's edges: decoding and dead letters, and the dispatch status kept in Redis."""

from __future__ import annotations

import pickle
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
import redis
from bytewax.connectors.kafka import KafkaSinkMessage
from confluent_kafka import Message

from core import keys
from core.config import Settings
from core.rows import CommandLogEntry
from core.topics import COMMANDS_ACKS, COMMANDS_SITE, DISPATCH_REQUESTS, TELEMETRY_DLQ
from operators.arbitration import ARBITER_KEY
from operators.control_steps import ControlLogic, ControlResult, Received, decode_control
from operators.dispatch import Ack, ControlConfig, Dispatch, Request, Sent, TwinSnapshot
from operators.kafka_batches import Polled
from operators.records import DLQ_KEY, Origin, codec
from operators.sinks import DispatchStatusSink, StatusWrite
from schemas.times import epoch_ms
from tests.control.twins import step

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def message(topic: str, key: bytes | None, value: bytes | None, offset: int = 0) -> Message:
    """A real confluent-kafka Message, as a consumer would hand the decode step."""
    return Message(topic=topic, partition=0, offset=offset, key=key, value=value, timestamp=(0, 0))


def _messages(*messages: Message) -> list[Message]:
    return list(messages)


def _request(dispatch_id: str, now: datetime = NOW, target_kw: float = 100.0,
             strategy: str = "qp-open-loop") -> bytes:
    return codec().encode("DispatchRequest", {
        "dispatch_id": dispatch_id, "action": "CREATE", "node_id": "region-0", "site_ids": None,
        "target_kw": target_kw, "start": now, "end": now + timedelta(minutes=5), "strategy": strategy,
        "requested_by": "test", "requested_at": now})


def _ack(command_id: str, site_id: str, at: datetime = NOW) -> bytes:
    return codec().encode("CommandAck", {"command_id": command_id, "site_id": site_id, "status": "ACCEPTED",
                                         "reason": None, "event_time": at})


def test_requests_and_acks_go_to_the_arbiter_and_bad_records_become_dead_letters() -> None:
    polls = [
        Polled(DISPATCH_REQUESTS, 0, _messages(
            message(DISPATCH_REQUESTS, b"d-1", _request("d-1")),
            message(DISPATCH_REQUESTS, b"d-1", b"\x00\x00\x00\x00\x01garbage"))),
        Polled(COMMANDS_ACKS, 0, _messages(
            message(COMMANDS_ACKS, b"site-7", _ack("d-1/site-7/2", "site-7")),
            message(COMMANDS_ACKS, b"site-8", _ack("d-1/site-7/2", "site-7")),
            message(COMMANDS_ACKS, None, _ack("d-1/site-7/2", "site-7")))),
    ]
    out = decode_control(polls)
    received = [value for key, value in out if isinstance(value, Received)]
    assert {key for key, value in out if isinstance(value, Received)} == {ARBITER_KEY}, "one arbiter sees all"
    request = next(r.event for r in received if isinstance(r.event, Request))
    assert (request.allocator, request.correction, request.priority) == ("qp", False, 0)
    ack = next(r for r in received if isinstance(r.event, Ack))
    assert ack.origin.key == b"site-7" and ack.origin.topic == COMMANDS_ACKS, "kept for a dead letter"
    dead = [value for key, value in out if key == DLQ_KEY]
    assert len(dead) == 3, "the undecodable request, the ack under another site's key, the ack without one"
    assert all(message.topic == TELEMETRY_DLQ for message in dead)  # type: ignore[union-attr]
    reasons = [codec().decode(message.value)["error_kind"] for message in dead]  # type: ignore[union-attr,arg-type]
    assert reasons.count("KEY_MISMATCH") == 2


@pytest.mark.integration
def _command(command_id: str, dispatch_id: str, site_id: str) -> bytes:
    return codec().encode("SiteCommand", {
        "command_id": command_id, "dispatch_id": dispatch_id, "site_id": site_id, "setpoint_kw": 2.5,
        "valid_from": NOW, "valid_until": NOW + timedelta(minutes=5), "attempt": 2,
        "issued_at": NOW + timedelta(seconds=4)})


def test_commands_read_back_are_journaled_as_sent_and_foreign_ones_are_dead_letters() -> None:
    poll = Polled(COMMANDS_SITE, 0, _messages(
        message(COMMANDS_SITE, b"site-7", _command("d-1/site-7/3", "d-1", "site-7")),
        message(COMMANDS_SITE, b"site-8", _command("d-1/site-7/3", "d-1", "site-7")),
        message(COMMANDS_SITE, b"site-7", _command("d-2/site-7/3", "d-1", "site-7")),
        message(COMMANDS_SITE, b"site-7", _command("d-1/site-7/x", "d-1", "site-7"))))
    out = decode_control([poll])
    [sent] = [value.event for _, value in out if isinstance(value, Received)]
    assert isinstance(sent, Sent) and (sent.revision, sent.attempt, sent.setpoint_kw) == (3, 2, 2.5)
    reasons = [codec().decode(letter.value)["error_kind"] for key, letter in out  # type: ignore[union-attr,arg-type]
               if key == DLQ_KEY]
    assert reasons == ["KEY_MISMATCH", "UNKNOWN_COMMAND", "UNKNOWN_COMMAND"]
    # No dispatch holds it (retired, or from before a restart with no state): journaled all the same.
    logic: ControlLogic = ControlLogic.builder(Settings())(None)
    [row] = step(logic, _Twin(), [value for _, value in out if isinstance(value, Received)])
    assert row == CommandLogEntry("d-1/site-7/3", "d-1", "site-7", 2.5, NOW, NOW + timedelta(minutes=5), 2,
                                  "SENT", NOW + timedelta(seconds=4))


def test_a_replayed_status_never_replaces_a_newer_or_final_one(stack_settings: Settings) -> None:
    client = redis.Redis.from_url(stack_settings.redis)
    sink = DispatchStatusSink(stack_settings.redis).build("status", 0, 1)
    ident = f"d-{uuid.uuid4().hex[:8]}"

    def write(state: str, at: int) -> None:
        sink.write_batch([StatusWrite(ident, at, state, 5_000, {"state": state, "event_time": at})])

    def stored() -> tuple[str, int]:
        fields = client.hmget(keys.dispatch_status(ident), ["state", "event_time"])
        return fields[0].decode(), int(fields[1])  # type: ignore[union-attr,arg-type]

    write("ACTIVE", 2_000)
    write("PENDING", 1_000)
    assert stored() == ("ACTIVE", 2_000), "an older status is ignored"
    write("COMPLETED", 3_000)
    write("FAILED", 4_000)
    assert stored() == ("COMPLETED", 3_000), "a final status stays final"
    assert client.zscore(keys.DISPATCH_INDEX, ident) == 5_000


class _Twin:
    """A node of 20 idle ONLINE sites, as the control step reads them (no Redis)."""

    ids = [f"site-{i:02d}" for i in range(20)]

    def members(self, node_id: str) -> list[str]:
        return self.ids

    def fleet_time(self, request: Request) -> int:
        return epoch_ms(datetime.now(UTC))

    def snapshot(self, site_ids: list[str]) -> TwinSnapshot:
        n = len(site_ids)
        return TwinSnapshot(list(site_ids), ["ONLINE"] * n, np.zeros(n), np.full(n, 5.0), np.full(n, 5.0),
                            np.full(n, 4.0), np.full(n, 3.0), np.zeros(n), [""] * n,
                            epoch_ms(datetime.now(UTC)))


def _step(logic: ControlLogic, topic: str, *messages: Message) -> list[ControlResult]:
    out = decode_control([Polled(topic, 0, list(messages))])
    return step(logic, _Twin(), [value for _, value in out if isinstance(value, Received)])


def _sent(emitted: list[ControlResult], topic: str, schema: str) -> list[dict[str, Any]]:
    return [codec().decode(e.value or b"", schema) for e in emitted
            if isinstance(e, KafkaSinkMessage) and e.topic == topic]


def test_the_control_step_arbitrates_and_dead_letters_forged_acks_and_reused_ids() -> None:
    settings = Settings()
    logic: ControlLogic = ControlLogic.builder(settings)(None)
    now = datetime.now(UTC)
    emitted = _step(logic, DISPATCH_REQUESTS,
                    message(DISPATCH_REQUESTS, b"d-a", _request("d-a", now, 20.0, "waterfill")),
                    message(DISPATCH_REQUESTS, b"d-b", _request("d-b", now + timedelta(milliseconds=1),
                                                                    20.0, "waterfill")))
    commands = _sent(emitted, "commands.site", "SiteCommand")
    by_dispatch = {d: {c["site_id"] for c in commands if c["dispatch_id"] == d} for d in ("d-a", "d-b")}
    assert by_dispatch["d-a"] and by_dispatch["d-b"] and not by_dispatch["d-a"] & by_dispatch["d-b"]

    victim, outsider = sorted(by_dispatch["d-a"])[0], sorted(by_dispatch["d-b"])[0]
    forged = message(COMMANDS_ACKS, outsider.encode(), _ack(f"d-a/{victim}/1", outsider,
                                                                now + timedelta(days=365)), 41)
    reused = message(DISPATCH_REQUESTS, b"d-a", _request("d-a", now + timedelta(seconds=5), 9.0), 42)
    dead = _sent(_step(logic, COMMANDS_ACKS, forged) + _step(logic, DISPATCH_REQUESTS, reused),
                 TELEMETRY_DLQ, "DeadLetter")
    assert [(d["error_kind"], d["offset"], d["consumer"]) for d in dead] == [
        ("NOT_THE_COMMANDED_SITE", 41, "dataflows.control"), ("DISPATCH_ID_REUSED", 42, "dataflows.control")]
    first = logic.arbiter.dispatches["d-a"]
    assert first.state == "ACTIVE" and first.request.target_kw == 20.0
    assert first.clock_ms < epoch_ms(now + timedelta(minutes=1)), "the forged ack's time moved no clock"
    assert logic.arbiter.refused == {"NOT_THE_COMMANDED_SITE": 1, "DISPATCH_ID_REUSED": 1}


def test_state_from_before_the_arbiter_is_dropped_not_a_crash() -> None:
    legacy = pickle.dumps(Dispatch(Request("d-old", "CREATE", "n", None, 1.0, 0, 1, "waterfill", True,
                                           "waterfill", "t", 0), ControlConfig()))
    logic: ControlLogic = ControlLogic.builder(Settings())(legacy)
    assert logic.arbiter.dispatches == {} and logic.notify_at() is None


def test_a_window_that_starts_in_the_fleets_time_starts_from_the_twin_reads() -> None:
    """A simulated fleet runs ahead of the wall clock: the step learns the fleet's time from the reads
    it asks for while the dispatch waits, and starts the window by it, not by the wall clock."""
    ahead_ms = 600_000

    class Ahead(_Twin):
        def fleet_time(self, request: Request) -> int:
            return epoch_ms(datetime.now(UTC)) + ahead_ms

    logic: ControlLogic = ControlLogic.builder(Settings())(None)
    wall = epoch_ms(datetime.now(UTC))
    request = Request("d-ahead", "CREATE", "feeder", None, 20.0, wall + ahead_ms, wall + 2 * ahead_ms,
                      "waterfill", True, "waterfill", "test", wall, 0)
    received = Received(request, Origin(b"d-ahead", b"", DISPATCH_REQUESTS, 0, 0, None))
    emitted = step(logic, Ahead(), [received])
    assert logic.arbiter.dispatches["d-ahead"].state == "PENDING", "a clock read first: not due by the wall"
    emitted += step(logic, Ahead(), [])
    assert logic.arbiter.dispatches["d-ahead"].state == "ACTIVE"
    assert _sent(emitted, "commands.site", "SiteCommand")
