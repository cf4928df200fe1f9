"""Upstream frame validation: the token's site is the only site a frame may speak for."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from core.topics import COMMANDS_ACKS, PLANS_SITE, TELEMETRY_RAW
from edge_gateway.frames import FrameRejectedError, parse_frame
from edge_gateway.wire import json_frame
from schemas import packaged_codec
from tests.edge_gateway.support import telemetry

CODEC = packaged_codec()
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize("as_json", [False, True])
def test_telemetry_is_stamped_with_received_time_and_keyed_by_the_token_site(as_json: bool) -> None:
    record = telemetry("site-a", received_time=datetime(2000, 1, 1, tzinfo=UTC))
    frame = json_frame("telemetry", record) if as_json else CODEC.encode("SiteTelemetry", record)
    accepted = parse_frame(CODEC, frame, "site-a", NOW)
    value = CODEC.decode(accepted.value, expected="SiteTelemetry")
    assert (accepted.kind.topic, accepted.site_id) == (TELEMETRY_RAW, "site-a")
    assert value["received_time"] == NOW
    assert value["soc_pct"] == record["soc_pct"]


def test_json_devices_may_leave_out_the_site_id() -> None:
    record = telemetry("ignored")
    del record["site_id"]
    accepted = parse_frame(CODEC, json_frame("telemetry", record), "site-a", NOW)
    assert CODEC.decode(accepted.value)["site_id"] == "site-a"


@pytest.mark.parametrize("as_json", [False, True])
def test_a_frame_naming_another_site_is_rejected_not_rewritten(as_json: bool) -> None:
    record = telemetry("site-b")
    frame = json_frame("telemetry", record) if as_json else CODEC.encode("SiteTelemetry", record)
    with pytest.raises(FrameRejectedError) as rejected:
        parse_frame(CODEC, frame, "site-a", NOW)
    assert rejected.value.reason == "site_mismatch"


def test_acks_and_plans_go_to_their_topics() -> None:
    ack = {"type": "ack", "command_id": "c1", "status": "ACCEPTED", "reason": None, "event_time": 0}
    plan = {"type": "plan", "plan_id": "p", "issued_at": 0, "start": 0, "interval_minutes": 5,
            "power_kw": [1.0]}
    assert parse_frame(CODEC, json.dumps(ack), "site-a", NOW).kind.topic == COMMANDS_ACKS
    assert parse_frame(CODEC, json.dumps(plan), "site-a", NOW).kind.topic == PLANS_SITE


@pytest.mark.parametrize(("frame", "reason"), [
    (b"", "undecodable"),
    (b"\x00\x00\x00", "undecodable"),
    ("[1, 2]", "undecodable"),
    ('{"type": ["telemetry"]}', "unexpected_record"),
    ('{"type": "ack", "command_id": 5}', "invalid"),
    (json_frame("telemetry", telemetry("site-a", soc_pct=-1.0)), "invalid"),
    (json_frame("telemetry", telemetry("site-a", solar_kw=-0.5)), "invalid"),
    (json_frame("telemetry", telemetry("site-a", grid_kw=float("nan"))), "invalid"),
])
def test_bad_frames_are_rejected_with_a_reason(frame: bytes | str, reason: str) -> None:
    with pytest.raises(FrameRejectedError) as rejected:
        parse_frame(CODEC, frame, "site-a", NOW)
    assert rejected.value.reason == reason
