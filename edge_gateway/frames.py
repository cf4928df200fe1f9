"""Turn one device frame into a validated record for Kafka, or say why not. Pure: no I/O.

The site a frame speaks for is the connection's token's site, never the
payload's: a payload naming another site is rejected (not rewritten), so a
compromised or buggy device cannot publish for its neighbours and the mistake
is visible in the metrics. JSON devices may leave ``site_id`` out; it is then
the token's.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from edge_gateway.wire import UPSTREAM_BY_RECORD, UPSTREAM_BY_TYPE, UpstreamKind
from schemas.codec import AvroCodec, DecodeError, EncodeError


class FrameRejectedError(Exception):
    """A frame that is not forwarded; ``reason`` is a short stable label for metrics and error frames."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Accepted:
    """A frame ready to produce: its kind (hence topic), the site key and the encoded value."""

    kind: UpstreamKind
    site_id: str
    value: bytes


def parse_frame(codec: AvroCodec, frame: bytes | str, site_id: str, received: datetime) -> Accepted:
    """Validate ``frame`` from a connection authenticated as ``site_id``; stamp telemetry's received_time."""
    kind, record = _decode_binary(codec, frame) if isinstance(frame, bytes) else _decode_json(frame, site_id)
    claimed = record.get("site_id")
    if claimed != site_id:
        raise FrameRejectedError("site_mismatch",
                                 f"frame speaks for site {claimed!r}, the token for {site_id!r}")
    if kind.record == "SiteTelemetry":
        _check_telemetry(record)
        record["received_time"] = received
    try:
        value = codec.encode(kind.record, record)
    except EncodeError as exc:
        raise FrameRejectedError("invalid", str(exc)) from None
    return Accepted(kind, site_id, value)


def _decode_binary(codec: AvroCodec, frame: bytes) -> tuple[UpstreamKind, dict[str, Any]]:
    try:
        decoded = codec.decode_with_info(frame)
    except DecodeError as exc:
        raise FrameRejectedError("undecodable", str(exc)) from None
    kind = UPSTREAM_BY_RECORD.get(decoded.record_name)
    if kind is None:
        raise FrameRejectedError("unexpected_record", f"devices do not send {decoded.record_name}")
    return kind, decoded.value


def _decode_json(frame: str, site_id: str) -> tuple[UpstreamKind, dict[str, Any]]:
    try:
        record = json.loads(frame)
    except ValueError as exc:
        raise FrameRejectedError("undecodable", f"not JSON: {exc}") from None
    if not isinstance(record, dict):
        raise FrameRejectedError("undecodable", "a JSON frame must be an object")
    frame_type = record.pop("type", None)
    kind = UPSTREAM_BY_TYPE.get(frame_type) if isinstance(frame_type, str) else None
    if kind is None:
        raise FrameRejectedError("unexpected_record", f"type must be one of {sorted(UPSTREAM_BY_TYPE)}")
    record.setdefault("site_id", site_id)
    return kind, record


def _check_telemetry(record: dict[str, Any]) -> None:
    """Physical sanity beyond the schema: finite numbers, state of charge a percentage, no negative solar."""
    for name in ("soc_pct", "battery_kw", "solar_kw", "load_kw", "grid_kw"):
        value = record.get(name)
        if isinstance(value, int | float) and not math.isfinite(value):
            raise FrameRejectedError("invalid", f"{name} is not a finite number")
    soc = record.get("soc_pct")
    if isinstance(soc, int | float) and not 0.0 <= soc <= 100.0:
        raise FrameRejectedError("invalid", f"soc_pct {soc} is outside 0..100")
    for name in ("solar_kw", "load_kw"):
        value = record.get(name)
        if isinstance(value, int | float) and value < 0:
            raise FrameRejectedError("invalid", f"{name} {value} is negative")
