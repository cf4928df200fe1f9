"""The column decoder reads a batch of SiteTelemetry exactly as fastavro reads each message, or declines."""

from __future__ import annotations

import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import DecodeError, packaged_codec
from schemas.columnread import TelemetryColumnDecoder, TelemetryColumns

CODEC = packaged_codec()
SID = CODEC.schema_id("SiteTelemetry")
DECODER = TelemetryColumnDecoder(CODEC.registry.schema_by_id(SID), SID)
MODES = DECODER.modes

_longs = st.one_of(st.integers(-(2**63), 2**63 - 1), st.integers(-5, 5), st.integers(0, 2**42))
#: Epoch milliseconds fastavro can turn into datetimes (years 1-9999); beyond, only the codec's
#: millisecond decoder reads them, and plausibility refuses them anyway.
_times = st.one_of(st.integers(-62_135_596_800_000, 253_402_300_799_999), st.integers(0, 2**42))
_doubles = st.floats(allow_nan=True, allow_infinity=True)
_text = st.one_of(st.text(max_size=8), st.text(alphabet="abc-0123456789", min_size=60, max_size=300),
                  st.text(min_size=1, max_size=80))
_ascii = st.text(alphabet="abcdefghij.-_0123456789", max_size=20)

records = st.fixed_dictionaries({
    "site_id": st.one_of(st.text(alphabet="site-0123456789", min_size=1, max_size=12), _text),
    "seq": _longs,
    "event_time": _times,
    "received_time": st.one_of(st.none(), _times),
    "soc_pct": _doubles, "battery_kw": _doubles, "solar_kw": _doubles, "load_kw": _doubles,
    "grid_kw": _doubles,
    "battery_temp_c": st.one_of(st.none(), _doubles),
    "mode": st.sampled_from(MODES),
    "active_command_id": st.one_of(st.none(), _ascii, _text),
    "firmware": st.one_of(st.none(), _ascii, _text),
})


def _row(columns: TelemetryColumns, i: int) -> dict[str, Any]:
    temp = None if columns.temp_null[i] else float(columns.battery_temp_c[i])
    return {"seq": int(columns.seq[i]), "event_time": int(columns.event_ms[i]),
            "soc_pct": float(columns.soc_pct[i]), "battery_kw": float(columns.battery_kw[i]),
            "solar_kw": float(columns.solar_kw[i]), "load_kw": float(columns.load_kw[i]),
            "grid_kw": float(columns.grid_kw[i]), "battery_temp_c": temp,
            "mode": MODES[columns.mode[i]], "active_command_id": columns.active_command_id[i]}


def _fastavro(value: bytes) -> dict[str, Any] | None:
    """What the codec's authority (fastavro) reads, times as epoch ms; None where it refuses."""
    try:
        record = CODEC.decode(value, "SiteTelemetry")
    except DecodeError:
        return None
    return {k: v if not hasattr(v, "timestamp") else round(v.timestamp() * 1000) for k, v in record.items()}


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Equal field by field; NaN equals NaN, and -0.0 is not 0.0 (bits, not values)."""
    return all(repr(a[k]) == repr(b[k]) for k in a)


@settings(max_examples=60, deadline=None)
@given(st.lists(records, min_size=1, max_size=6))
def test_every_decoded_row_is_what_fastavro_reads(batch: list[dict[str, Any]]) -> None:
    values = [CODEC.encode("SiteTelemetry", r) for r in batch]
    columns = DECODER.decode(values, [r["site_id"].encode() for r in batch])
    for i, record in enumerate(batch):
        if columns.ok[i]:
            reference = _fastavro(values[i])
            assert reference is not None and _same(_row(columns, i), reference)
        else:  # it declines only what it leaves to the codec on purpose
            strings = (record["active_command_id"] or "") + (record["firmware"] or "")
            assert not strings.isascii() or abs(record["seq"]) >= 2**62


@settings(max_examples=40, deadline=None)
@given(st.lists(st.fixed_dictionaries({
    "site_id": st.text(min_size=1, max_size=70), "seq": st.integers(0, 2**40),
    "event_time": _times, "received_time": st.one_of(st.none(), _times),
    "soc_pct": _doubles, "battery_kw": _doubles, "solar_kw": _doubles, "load_kw": _doubles,
    "grid_kw": _doubles, "battery_temp_c": st.one_of(st.none(), _doubles), "mode": st.sampled_from(MODES),
    "active_command_id": st.one_of(st.none(), _ascii), "firmware": st.one_of(st.none(), _ascii),
}), min_size=1, max_size=8))
def test_ordinary_records_are_all_decoded_unicode_ids_and_long_ids_too(batch: list[dict[str, Any]]) -> None:
    values = [CODEC.encode("SiteTelemetry", r) for r in batch]
    columns = DECODER.decode(values, [r["site_id"].encode() for r in batch])
    assert columns.ok.all()
    for i, value in enumerate(values):
        reference = _fastavro(value)
        assert reference is not None and _same(_row(columns, i), reference)


@settings(max_examples=120, deadline=None)
@given(st.lists(records, min_size=1, max_size=6), st.integers(0, 10_000), st.integers(0, 255),
       st.binary(max_size=3), st.integers(0, 8))
def test_a_damaged_message_is_declined_or_read_as_fastavro_reads_it(
        batch: list[dict[str, Any]], where: int, byte: int, tail: bytes, cut: int) -> None:
    values = [CODEC.encode("SiteTelemetry", r) for r in batch]
    victim = where % len(values)
    damaged = bytearray(values[victim])
    damaged[where % len(damaged)] = byte
    values[victim] = (bytes(damaged) + tail)[: len(damaged) + len(tail) - cut]
    columns = DECODER.decode(values, [r["site_id"].encode() for r in batch])
    for i, value in enumerate(values):
        if columns.ok[i]:
            reference = _fastavro(value)
            assert reference is not None and _same(_row(columns, i), reference)
            assert reference["site_id"] == batch[i]["site_id"]


def test_a_key_other_than_the_site_id_or_no_key_is_left_to_the_codec() -> None:
    record = {"site_id": "site-a", "seq": 1, "event_time": 1_700_000_000_000, "received_time": None,
              "soc_pct": 50.0, "battery_kw": 1.0, "solar_kw": 0.0, "load_kw": 0.5, "grid_kw": -0.5,
              "battery_temp_c": None, "mode": "IDLE", "active_command_id": "cmd-1", "firmware": "1.0"}
    value = CODEC.encode("SiteTelemetry", record)
    columns = DECODER.decode([value] * 4, [b"site-a", b"site-b", None, b"site-"])
    assert columns.ok.tolist() == [True, False, False, False]
    assert columns.active_command_id[0] == "cmd-1" and math.isnan(columns.battery_temp_c[0])
    other = CODEC.encode("SiteAncestry", {
        "site_id": "site-a", "version": 1, "event_time": 0, "effective_from": 0, "retired": False,
        "capacity_kwh": 1.0, "max_charge_kw": 1.0, "max_discharge_kw": 1.0, "reserve_pct": 0.0,
        "solar_kwp": 0.0, "customer_id": None, "region": "r", "tariff": None, "paths": []})
    assert DECODER.decode([other, b"", b"\x01" + value[1:]], [b"site-a"] * 3).ok.tolist() == [False] * 3
