"""The control dataflow's edges: decoding and dead letters, and the dispatch status kept in Redis."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import cast

import pytest
import redis
from confluent_kafka import Message

from core import keys
from core.config import Settings
from core.topics import COMMANDS_ACKS, DISPATCH_REQUESTS, TELEMETRY_DLQ
from operators.arbitration import ARBITER_KEY
from operators.control_steps import Received, decode_control
from operators.dispatch import Ack, Request
from operators.kafka_batches import Polled
from operators.records import DLQ_KEY, codec
from operators.sinks import DispatchStatusSink, StatusWrite

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


@dataclass
class FakeMessage:
    """What confluent-kafka's Message answers, for the decode step (which only reads these)."""

    _topic: str
    _key: bytes | None
    _value: bytes | None
    _offset: int = 0

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return self._topic

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def timestamp(self) -> tuple[int, int]:
        return (0, 0)


def _messages(*fakes: FakeMessage) -> list[Message]:
    return cast(list[Message], list(fakes))


def _request(dispatch_id: str) -> bytes:
    return codec().encode("DispatchRequest", {
        "dispatch_id": dispatch_id, "action": "CREATE", "node_id": "region-0", "site_ids": None,
        "target_kw": 100.0, "start": NOW, "end": NOW + timedelta(minutes=5), "strategy": "qp-open-loop",
        "requested_by": "test", "requested_at": NOW})


def _ack(command_id: str, site_id: str) -> bytes:
    return codec().encode("CommandAck", {"command_id": command_id, "site_id": site_id, "status": "ACCEPTED",
                                         "reason": None, "event_time": NOW})


def test_requests_and_acks_go_to_the_arbiter_and_bad_records_become_dead_letters() -> None:
    polls = [
        Polled(DISPATCH_REQUESTS, 0, _messages(
            FakeMessage(DISPATCH_REQUESTS, b"d-1", _request("d-1")),
            FakeMessage(DISPATCH_REQUESTS, b"d-1", b"\x00\x00\x00\x00\x01garbage"))),
        Polled(COMMANDS_ACKS, 0, _messages(
            FakeMessage(COMMANDS_ACKS, b"site-7", _ack("d-1/site-7/2", "site-7")),
            FakeMessage(COMMANDS_ACKS, b"site-8", _ack("d-1/site-7/2", "site-7")),
            FakeMessage(COMMANDS_ACKS, None, _ack("d-1/site-7/2", "site-7")))),
    ]
    out = decode_control(polls)
    received = [value for key, value in out if isinstance(value, Received)]
    assert {key for key, value in out if isinstance(value, Received)} == {ARBITER_KEY}, "one arbiter sees all"
    request = next(r.event for r in received if isinstance(r.event, Request))
    assert (request.allocator, request.correction, request.priority) == ("qp", False, 0)
    ack = next(r for r in received if isinstance(r.event, Ack))
    assert ack.origin.key() == b"site-7" and ack.origin.topic() == COMMANDS_ACKS, "kept for a dead letter"
    dead = [value for key, value in out if key == DLQ_KEY]
    assert len(dead) == 3, "the undecodable request, the ack under another site's key, the ack without one"
    assert all(message.topic == TELEMETRY_DLQ for message in dead)  # type: ignore[union-attr]
    reasons = [codec().decode(message.value)["error_kind"] for message in dead]  # type: ignore[union-attr,arg-type]
    assert reasons.count("KEY_MISMATCH") == 2


@pytest.mark.integration
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
