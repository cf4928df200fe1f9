"""The codec: round trips for every schema, every DecodeError reason, old-version reads, encode errors."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.codec import AvroCodec, DecodeError, DecodeErrorReason, EncodeError, packaged_codec
from schemas.registry import (
    LocalSchemaRegistry,
    all_schema_names,
    load_schema,
    record_subject,
    register_packaged,
)
from schemas.times import EPOCH, epoch_ms, from_epoch_ms
from tests.schemas.avro_strategies import from_schema

CODEC = packaged_codec()
NOW = datetime(2025, 3, 1, 12, 30, 15, 123000, tzinfo=UTC)
TELEMETRY: dict[str, Any] = {
    "site_id": "site-000123",
    "seq": 42,
    "event_time": NOW,
    "received_time": None,
    "soc_pct": 55.5,
    "battery_kw": -2.5,
    "solar_kw": 3.2,
    "load_kw": 0.7,
    "grid_kw": 0.0,
    "battery_temp_c": 25.1,
    "mode": "SELF_CONSUMPTION",
    "active_command_id": None,
    "firmware": "1.2.3",
}
TELEMETRY_BYTES = CODEC.encode("SiteTelemetry", TELEMETRY)


@pytest.mark.parametrize("name", all_schema_names())
def test_encode_then_decode_is_identity(name: str) -> None:
    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(from_schema(load_schema(name)))
    def round_trip(value: dict[str, Any]) -> None:
        data = CODEC.encode(name, value)
        assert CODEC.decode(data, expected=name) == value

    round_trip()


def test_decode_with_info_names_record_and_id() -> None:
    decoded = CODEC.decode_with_info(TELEMETRY_BYTES)
    assert decoded.record_name == "SiteTelemetry"
    assert decoded.schema_id == CODEC.schema_id("SiteTelemetry")
    assert decoded.value == TELEMETRY
    assert CODEC.decode(TELEMETRY_BYTES, expected="vpp.v1.SiteTelemetry") == TELEMETRY


def test_timestamps_decode_to_aware_utc() -> None:
    assert CODEC.decode(TELEMETRY_BYTES)["event_time"].tzinfo is not None
    assert CODEC.decode(TELEMETRY_BYTES)["event_time"].utcoffset().total_seconds() == 0


def _reason(data: bytes, expected: str | None = None) -> DecodeErrorReason:
    with pytest.raises(DecodeError) as caught:
        CODEC.decode(data, expected)
    return caught.value.reason


def test_wrong_magic_byte() -> None:
    assert _reason(b"\x01" + TELEMETRY_BYTES[1:]) is DecodeErrorReason.WRONG_MAGIC
    assert _reason(b"\x7f") is DecodeErrorReason.WRONG_MAGIC


def test_unknown_schema_id() -> None:
    unknown = (CODEC.schema_id("SiteTelemetry") ^ 1).to_bytes(4, "big")
    assert _reason(b"\x00" + unknown + TELEMETRY_BYTES[5:]) is DecodeErrorReason.UNKNOWN_SCHEMA_ID


@pytest.mark.parametrize("name", all_schema_names())
def test_truncated_at_every_cut_point(name: str) -> None:
    @settings(max_examples=5, deadline=None)
    @given(from_schema(load_schema(name)))
    def every_cut(value: dict[str, Any]) -> None:
        data = CODEC.encode(name, value)
        for cut in range(len(data)):
            assert _reason(data[:cut]) is DecodeErrorReason.TRUNCATED, cut

    every_cut()


def test_schema_mismatch_with_expected_record() -> None:
    assert _reason(TELEMETRY_BYTES, expected="SiteStatus") is DecodeErrorReason.SCHEMA_MISMATCH


def test_trailing_bytes_are_a_mismatch() -> None:
    assert _reason(TELEMETRY_BYTES + b"\x00") is DecodeErrorReason.SCHEMA_MISMATCH


def test_bytes_invalid_under_the_writer_schema() -> None:
    invalid_utf8_site_id = TELEMETRY_BYTES[:5] + b"\x02\xff" + TELEMETRY_BYTES[5 + 12 :]
    assert _reason(invalid_utf8_site_id) is DecodeErrorReason.SCHEMA_MISMATCH
    registry = LocalSchemaRegistry()
    tiny = {
        "type": "record",
        "name": "Tiny",
        "fields": [
            {"name": "e", "type": {"type": "enum", "name": "E", "symbols": ["A"]}},
            {"name": "u", "type": ["null", "string"]},
        ],
    }
    header = b"\x00" + registry.register(record_subject("Tiny"), tiny).to_bytes(4, "big")
    codec = AvroCodec(registry)
    assert codec.decode(header + b"\x00\x00") == {"e": "A", "u": None}
    for body in (b"\x02\x00", b"\x00\x04"):  # enum index 1, union index 2: neither exists
        with pytest.raises(DecodeError) as caught:
            codec.decode(header + body)
        assert caught.value.reason is DecodeErrorReason.SCHEMA_MISMATCH


HEADERS = [b"", b"\x00"] + [b"\x00" + CODEC.schema_id(name).to_bytes(4, "big") for name in all_schema_names()]


@settings(max_examples=400, deadline=None)
@given(header=st.sampled_from(HEADERS), body=st.binary(max_size=120))
def test_random_bytes_raise_only_decode_error(header: bytes, body: bytes) -> None:
    try:
        CODEC.decode(header + body)
    except DecodeError as error:
        assert isinstance(error.reason, DecodeErrorReason)


def test_encode_error_names_the_field() -> None:
    with pytest.raises(EncodeError, match="soc_pct"):
        CODEC.encode("SiteTelemetry", {**TELEMETRY, "soc_pct": "full"})
    with pytest.raises(EncodeError, match="socpct"):
        CODEC.encode("SiteTelemetry", {**TELEMETRY, "socpct": 1.0})
    missing = dict(TELEMETRY)
    del missing["seq"]
    with pytest.raises(EncodeError, match="seq"):
        CODEC.encode("SiteTelemetry", missing)
    with pytest.raises(EncodeError, match="NoSuchRecord"):
        CODEC.encode("NoSuchRecord", {})


def test_optional_fields_may_be_omitted() -> None:
    sparse = {k: v for k, v in TELEMETRY.items() if k not in ("received_time", "firmware")}
    assert CODEC.decode(CODEC.encode("SiteTelemetry", sparse)) == {
        **TELEMETRY,
        "received_time": None,
        "firmware": None,
    }


def _telemetry_v2() -> dict[str, Any]:
    """A plausible next version: a new optional field and a new enum symbol."""
    schema = copy.deepcopy(load_schema("SiteTelemetry"))
    schema["fields"].append(
        {"name": "grid_frequency_hz", "type": ["null", "double"], "default": None, "doc": "Grid frequency."}
    )
    mode = next(f for f in schema["fields"] if f["name"] == "mode")
    mode["type"]["symbols"].insert(-1, "GRID_SERVICE")
    return schema


def test_old_version_decodes_with_the_current_reader(tmp_path: Path) -> None:
    old_process = packaged_codec(tmp_path)
    old_bytes = old_process.encode("SiteTelemetry", TELEMETRY)
    new_process = AvroCodec(old_process.registry, {"SiteTelemetry": _telemetry_v2()})
    decoded = new_process.decode_with_info(old_bytes, expected="SiteTelemetry")
    assert decoded.schema_id == old_process.schema_id("SiteTelemetry")
    assert decoded.value == {**TELEMETRY, "grid_frequency_hz": None}


def test_unpinned_codec_reads_the_registry_latest() -> None:
    registry = LocalSchemaRegistry()
    register_packaged(registry)
    old_bytes = AvroCodec(registry).encode("SiteTelemetry", TELEMETRY)
    registry.register(record_subject("SiteTelemetry"), _telemetry_v2())
    assert AvroCodec(registry).decode(old_bytes)["grid_frequency_hz"] is None


def test_new_enum_symbol_reads_as_the_enum_default_in_an_old_process(tmp_path: Path) -> None:
    old_process = packaged_codec(tmp_path)
    new_process = AvroCodec(LocalSchemaRegistry(tmp_path), {"SiteTelemetry": _telemetry_v2()})
    new_bytes = new_process.encode(
        "SiteTelemetry", {**TELEMETRY, "mode": "GRID_SERVICE", "grid_frequency_hz": 50.0}
    )
    assert new_process.decode(new_bytes)["mode"] == "GRID_SERVICE"
    assert old_process.decode(new_bytes) == {**TELEMETRY, "mode": "UNKNOWN"}


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(from_schema(load_schema("SiteTelemetry")))
def test_decode_millis_is_decode_with_times_as_epoch_milliseconds(value: dict[str, Any]) -> None:
    data = CODEC.encode("SiteTelemetry", value)
    expected = {k: epoch_ms(v) if isinstance(v, datetime) else v
                for k, v in CODEC.decode(data, "SiteTelemetry").items()}
    assert CODEC.decode_millis(data, "SiteTelemetry") == expected


def test_decode_millis_raises_the_same_typed_errors() -> None:
    for bad, reason in ((TELEMETRY_BYTES[:9], DecodeErrorReason.TRUNCATED),
                        (b"\x01" + TELEMETRY_BYTES[1:], DecodeErrorReason.WRONG_MAGIC),
                        (b"\x00\x7f\xff\xff\xfe" + TELEMETRY_BYTES[5:], DecodeErrorReason.UNKNOWN_SCHEMA_ID)):
        with pytest.raises(DecodeError) as caught:
            CODEC.decode_millis(bad, "SiteTelemetry")
        assert caught.value.reason == reason


def test_epoch_ms_is_exact_where_float_seconds_are_not() -> None:
    for ms in range(1_075_593_600_000, 1_075_593_601_000):
        assert epoch_ms(EPOCH + timedelta(milliseconds=ms)) == ms


@given(st.integers(min_value=epoch_ms(datetime(1900, 1, 1, tzinfo=UTC)),
                   max_value=epoch_ms(datetime(2200, 1, 1, tzinfo=UTC))))
def test_from_epoch_ms_is_the_exact_inverse_of_epoch_ms(ms: int) -> None:
    assert from_epoch_ms(ms) == EPOCH + timedelta(milliseconds=ms)
    assert epoch_ms(from_epoch_ms(ms)) == ms
