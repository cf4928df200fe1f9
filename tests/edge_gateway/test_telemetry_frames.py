"""The simulator's hand-written SiteTelemetry frames are the codec's bytes, for any record it may send."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_gateway.telemetry_frames import TelemetryEncoder
from schemas import packaged_codec
from schemas.fastread import write_long

CODEC = packaged_codec()
ENCODER = TelemetryEncoder(CODEC)
doubles = st.floats(allow_nan=False, allow_infinity=False)
records = st.fixed_dictionaries({
    "site_id": st.text(min_size=1, max_size=40), "seq": st.integers(0, 2**62),
    "event_time": st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1),  # noqa: DTZ001
                               timezones=st.just(UTC)),
    "received_time": st.none() | st.just(datetime(2026, 1, 1, tzinfo=UTC)),
    "soc_pct": doubles, "battery_kw": doubles, "solar_kw": doubles, "load_kw": doubles, "grid_kw": doubles,
    "battery_temp_c": st.none() | doubles,
    "mode": st.sampled_from(["IDLE", "SELF_CONSUMPTION", "DISPATCH", "BACKUP", "FAULT"]),
    "active_command_id": st.none() | st.text(max_size=30), "firmware": st.none() | st.text(max_size=20),
})


def test_the_encoder_matches_the_codec_on_its_probe() -> None:
    assert ENCODER.exact


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(record=records)
def test_frames_are_the_codecs_bytes(record: dict[str, Any]) -> None:
    assert ENCODER.encode(record) == CODEC.encode("SiteTelemetry", record)


@given(value=st.integers(-(2**63), 2**63 - 1))
def test_avro_longs_are_zigzag_varints(value: int) -> None:
    zigzag = (value << 1) ^ (value >> 63)
    decoded, shift = 0, 0
    for byte in write_long(value):
        decoded |= (byte & 0x7F) << shift
        shift += 7
    assert decoded == zigzag and all(b & 0x80 for b in write_long(value)[:-1])
