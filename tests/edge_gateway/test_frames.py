"""Upstream frame validation: the token's site is the only site a frame may speak for."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.plausibility import BEYOND_RATING, FUTURE_EVENT_TIME, NOT_A_NUMBER, Rules, SiteLimits
from core.topics import COMMANDS_ACKS, PLANS_SITE, TELEMETRY_RAW
from edge_gateway import frames
from edge_gateway.frames import FrameRejectedError, parse_frame
from edge_gateway.wire import json_frame
from schemas import packaged_codec
from schemas.times import epoch_ms, from_epoch_ms
from tests.edge_gateway.support import telemetry as _telemetry

CODEC = packaged_codec()
NOW = datetime.now(UTC).replace(microsecond=0)
NOW_MS = epoch_ms(NOW)


def telemetry(site_id: str, **changes: Any) -> dict[str, Any]:
    """A valid reading taken at NOW, the gateway clock of these tests (however long collection took)."""
    return _telemetry(site_id, **({"event_time": NOW} | changes))


@pytest.mark.parametrize("as_json", [False, True])
def test_telemetry_is_stamped_with_received_time_and_keyed_by_the_token_site(as_json: bool) -> None:
    record = telemetry("site-a", received_time=datetime(2000, 1, 1, tzinfo=UTC))
    frame = json_frame("telemetry", record) if as_json else CODEC.encode("SiteTelemetry", record)
    accepted = parse_frame(CODEC, frame, "site-a", NOW_MS)
    value = CODEC.decode(accepted.value, expected="SiteTelemetry")
    assert (accepted.kind.topic, accepted.site_id) == (TELEMETRY_RAW, "site-a")
    assert value["received_time"] == NOW
    assert value["soc_pct"] == record["soc_pct"]


def test_json_devices_may_leave_out_the_site_id() -> None:
    record = telemetry("ignored")
    del record["site_id"]
    accepted = parse_frame(CODEC, json_frame("telemetry", record), "site-a", NOW_MS)
    assert CODEC.decode(accepted.value)["site_id"] == "site-a"


@pytest.mark.parametrize("as_json", [False, True])
def test_a_frame_naming_another_site_is_rejected_not_rewritten(as_json: bool) -> None:
    record = telemetry("site-b")
    frame = json_frame("telemetry", record) if as_json else CODEC.encode("SiteTelemetry", record)
    with pytest.raises(FrameRejectedError) as rejected:
        parse_frame(CODEC, frame, "site-a", NOW_MS)
    assert rejected.value.reason == "site_mismatch"


def test_acks_and_plans_go_to_their_topics() -> None:
    ack = {"type": "ack", "command_id": "c1", "status": "ACCEPTED", "reason": None, "event_time": NOW_MS}
    plan = {"type": "plan", "plan_id": "p", "issued_at": NOW_MS, "start": NOW_MS, "interval_minutes": 5,
            "power_kw": [1.0]}
    assert parse_frame(CODEC, json.dumps(ack), "site-a", NOW_MS).kind.topic == COMMANDS_ACKS
    assert parse_frame(CODEC, json.dumps(plan), "site-a", NOW_MS).kind.topic == PLANS_SITE


@pytest.mark.parametrize(("frame", "reason"), [
    (b"", "undecodable"),
    (b"\x00\x00\x00", "undecodable"),
    ("[1, 2]", "undecodable"),
    ('{"type": ["telemetry"]}', "unexpected_record"),
    ('{"type": "ack", "command_id": 5}', "invalid"),
    (json_frame("telemetry", telemetry("site-a", soc_pct=-1.0)), "out_of_range"),
    (json_frame("telemetry", telemetry("site-a", solar_kw=-0.5)), "out_of_range"),
    (json_frame("telemetry", telemetry("site-a", grid_kw=float("nan"))), "not_a_number"),
])
def test_bad_frames_are_rejected_with_a_reason(frame: bytes | str, reason: str) -> None:
    with pytest.raises(FrameRejectedError) as rejected:
        parse_frame(CODEC, frame, "site-a", NOW_MS)
    assert rejected.value.reason == reason


# -- plausibility (issue 20, cases 2 and 3): core.plausibility's rules against the gateway's clock -----

YEAR_MS = 365 * 24 * 3_600_000
RATED = SiteLimits(max_charge_kw=5.0, max_discharge_kw=5.0)


def _json(frame_type: str, **fields: Any) -> str:
    return json.dumps({"type": frame_type, **fields})


def _telemetry_json(**changes: Any) -> str:
    record = json.loads(json_frame("telemetry", telemetry("site-a")))
    record.update(changes)
    return json.dumps(record)


def _ack(event_time: Any) -> str:
    return _json("ack", command_id="c1", status="ACCEPTED", reason=None, event_time=event_time)


def _plan(issued_at: Any, power_kw: list[Any]) -> str:
    return _json("plan", plan_id="p", issued_at=issued_at, start=NOW_MS, interval_minutes=5,
                 power_kw=power_kw)


@pytest.mark.parametrize(("frame", "reason"), [
    (_telemetry_json(battery_kw=True), "not_a_number"),
    (_telemetry_json(battery_kw=1e12), "out_of_range"),
    (_telemetry_json(grid_kw=-1e12), "out_of_range"),
    (_telemetry_json(soc_pct=1e300), "out_of_range"),
    (_telemetry_json(seq=True), "out_of_range"),
    (_telemetry_json(event_time=NOW_MS + YEAR_MS), "future_event_time"),
    (_telemetry_json(event_time=31_536_000_000), "stale_event_time"),  # 1971
    (CODEC.encode("SiteTelemetry", telemetry("site-a", battery_kw=1e12)), "out_of_range"),
    (CODEC.encode("SiteTelemetry", telemetry("site-a", event_time=datetime(2027, 12, 1, tzinfo=UTC))),
     "future_event_time"),
    (CODEC.encode("SiteTelemetry", telemetry("site-a", event_time=datetime(1971, 1, 1, tzinfo=UTC))),
     "stale_event_time"),
    (_telemetry_json(battery_kw=9.0), "beyond_rating"),
    (_telemetry_json(battery_kw=-9.0), "beyond_rating"),
    (_ack(NOW_MS + YEAR_MS), "future_event_time"),
    (_ack(0), "stale_event_time"),
    (_ack(True), "not_a_number"),
    (_plan(NOW_MS + YEAR_MS, [1.0]), "future_event_time"),
    (_plan(NOW_MS, [True]), "not_a_number"),
    (_plan(NOW_MS, [1e12]), "out_of_range"),
], ids=lambda value: "avro" if isinstance(value, bytes) else None)  # an Avro frame holds the wall clock: the
# default id would differ between collections, and pytest-xdist refuses workers that collect different ids
def test_implausible_frames_are_refused_by_the_plausibility_reason(frame: bytes | str, reason: str) -> None:
    with pytest.raises(FrameRejectedError) as rejected:
        parse_frame(CODEC, frame, "site-a", NOW_MS, Rules(), RATED)
    assert rejected.value.reason == reason


def test_the_registered_rating_binds_only_sites_the_registry_knows() -> None:
    frame = _telemetry_json(battery_kw=9.0)
    assert parse_frame(CODEC, frame, "site-a", NOW_MS, Rules(), None).kind.topic == TELEMETRY_RAW
    within_margin = _telemetry_json(battery_kw=6.0)  # 5 kW rated, 1.25 margin
    assert parse_frame(CODEC, within_margin, "site-a", NOW_MS, Rules(), RATED).kind.topic == TELEMETRY_RAW


def test_event_time_is_bounded_by_the_gateway_clock_not_the_device() -> None:
    ahead = Rules(max_ahead_ms=60_000)
    slightly_ahead = _telemetry_json(event_time=NOW_MS + 30_000)
    assert parse_frame(CODEC, slightly_ahead, "site-a", NOW_MS, ahead).kind.topic == TELEMETRY_RAW
    with pytest.raises(FrameRejectedError, match="future_event_time"):
        parse_frame(CODEC, slightly_ahead, "site-a", NOW_MS, Rules())


# ---- the hot path of binary telemetry (issue 21): stamped in place, not decoded and encoded again ----


@settings(max_examples=40, deadline=None)
@given(seq=st.integers(0, 2**62), soc=st.floats(0.0, 100.0), battery=st.floats(-5.0, 5.0),
       temp=st.none() | st.floats(-20.0, 60.0), command=st.none() | st.text(max_size=40),
       received=st.none() | st.integers(0, 2**47), site=st.text(min_size=1, max_size=30))
def test_a_binary_frame_stamped_in_place_is_what_encoding_the_record_again_gives(
        seq: int, soc: float, battery: float, temp: float | None, command: str | None, received: int | None,
        site: str) -> None:
    record = telemetry(site, seq=seq, soc_pct=soc, battery_kw=battery, battery_temp_c=temp,
                       active_command_id=command,
                       received_time=None if received is None else from_epoch_ms(received))
    frame = CODEC.encode("SiteTelemetry", record)
    assert frames._stamped_telemetry(CODEC, frame, site, NOW_MS, Rules(), SiteLimits(5.0, 5.0)) is not None
    accepted = parse_frame(CODEC, frame, site, NOW_MS, Rules(), SiteLimits(5.0, 5.0))
    assert accepted.value == CODEC.encode("SiteTelemetry", record | {"received_time": NOW})


@pytest.mark.parametrize(("changes", "reason"), [
    ({"site_id": "site-b"}, "site_mismatch"),
    ({"battery_kw": 6.5}, BEYOND_RATING),
    ({"event_time": datetime(2030, 1, 1, tzinfo=UTC)}, FUTURE_EVENT_TIME),
    ({"soc_pct": float("nan")}, NOT_A_NUMBER),
])
def test_the_binary_hot_path_keeps_every_check(changes: dict[str, Any], reason: str) -> None:
    frame = CODEC.encode("SiteTelemetry", telemetry("site-a") | changes)
    with pytest.raises(FrameRejectedError) as rejected:
        frames._stamped_telemetry(CODEC, frame, "site-a", NOW_MS, Rules(), SiteLimits(5.0, 5.0))
    assert rejected.value.reason == reason


def test_bytes_the_generated_decoder_does_not_read_exactly_take_the_general_path() -> None:
    frame = CODEC.encode("SiteTelemetry", telemetry("site-a"))
    assert frames._stamped_telemetry(CODEC, frame + b"\x00", "site-a", NOW_MS, Rules(), None) is None
    assert frames._stamped_telemetry(CODEC, frame[:-3], "site-a", NOW_MS, Rules(), None) is None
    ack = CODEC.encode("CommandAck", {"site_id": "site-a", "command_id": "c", "status": "ACCEPTED",
                                      "reason": None, "event_time": NOW})
    assert frames._stamped_telemetry(CODEC, ack, "site-a", NOW_MS, Rules(), None) is None
