"""Turn one device frame into a validated record for Kafka, or say why not. Pure: no I/O.

The site a frame speaks for is the connection's token's site, never the
payload's: a payload naming another site is rejected (not rewritten), so a
compromised or buggy device cannot publish for its neighbours and the mistake
is visible in the metrics. JSON devices may leave ``site_id`` out; it is then
the token's.

A frame passes two gates. The schema first (the codec must be able to encode
it: missing fields and wrong types are ``invalid``), then plausibility
(:mod:`core.plausibility`, the rule set the telemetry dataflow applies again):
telemetry within physics and the site's registered rating, booleans refused
where numbers belong, and the event time of every record (telemetry's
``event_time``, an ack's ``event_time``, a plan's ``issued_at``) within the
allowed skew ahead of and the store-and-forward horizon behind the gateway's
clock. A plan's powers are bounded like telemetry's. Refusals carry the
reason labels of :mod:`core.plausibility`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import cache, lru_cache
from typing import Any

from core.plausibility import (
    NOT_A_NUMBER,
    OUT_OF_RANGE,
    Implausible,
    Rules,
    SiteLimits,
    check_event_time,
    check_telemetry,
)
from edge_gateway.wire import UPSTREAM_BY_RECORD, UPSTREAM_BY_TYPE, UpstreamKind
from schemas.codec import HEADER_SIZE, AvroCodec, DecodeError, EncodeError
from schemas.fastread import read_long, write_long
from schemas.times import epoch_ms

#: The field holding each upstream record's event time.
EVENT_TIME_FIELD = {"SiteTelemetry": "event_time", "CommandAck": "event_time", "SitePlan": "issued_at"}


class FrameRejectedError(Exception):
    """A frame that is not forwarded; ``reason`` is a short stable label for metrics and error frames."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(slots=True)
class Accepted:
    """A frame ready to produce: its kind (hence topic), the site key and the encoded value.

    Made for every frame, so slotted and not frozen (a frozen dataclass's ``__init__`` costs
    three ``object.__setattr__`` calls).
    """

    kind: UpstreamKind
    site_id: str
    value: bytes


def parse_frame(codec: AvroCodec, frame: bytes | str, site_id: str, received_ms: int,
                rules: Rules | None = None, limits: SiteLimits | None = None) -> Accepted:
    """Validate ``frame`` from a connection authenticated as ``site_id``; stamp telemetry's received_time.

    ``received_ms`` is the gateway's clock in epoch milliseconds (an int, not a datetime: this runs
    for every frame), against which event times are bounded; ``limits`` are the site's registered
    ratings, if the registry knows them.
    """
    if isinstance(frame, bytes):
        accepted = _stamped_telemetry(codec, frame, site_id, received_ms, rules or Rules(), limits)
        if accepted is not None:
            return accepted
    kind, record = _decode_binary(codec, frame) if isinstance(frame, bytes) else _decode_json(frame, site_id)
    if record.get("site_id") != site_id:
        raise _site_mismatch(record.get("site_id"), site_id)
    if kind.record == "SiteTelemetry":
        record["received_time"] = received_ms  # the codec writes epoch ms as a timestamp-millis as is
    try:
        value = codec.encode(kind.record, record)
    except EncodeError as exc:
        raise FrameRejectedError("invalid", str(exc)) from None
    implausible = check_record(kind.record, record, received_ms, rules or Rules(), limits)
    if implausible is not None:
        raise FrameRejectedError(implausible.reason, implausible.detail)
    return Accepted(kind, site_id, value)


#: The fields a SiteTelemetry starts with, in the gateway's own schema version, for the fast path.
_TELEMETRY_HEAD = (("site_id", "string"), ("seq", "long"),
                   ("event_time", {"type": "long", "logicalType": "timestamp-millis"}),
                   ("received_time", ["null", {"type": "long", "logicalType": "timestamp-millis"}]))
_TELEMETRY = UPSTREAM_BY_RECORD["SiteTelemetry"]


def _stamped_telemetry(codec: AvroCodec, frame: bytes, site_id: str, received_ms: int, rules: Rules,
                       limits: SiteLimits | None) -> Accepted | None:
    """The hot path of a binary telemetry frame written with the gateway's own schema version:
    the frame's bytes are forwarded with ``received_time`` stamped in place, not decoded to
    datetimes and encoded again. Every check of :func:`parse_frame` applies (the token's site,
    plausibility against the site's rating and the gateway's clock); the bytes are those
    :meth:`AvroCodec.encode` would write. None: not such a frame (another record or version, or
    bytes the generated decoder does not read exactly), so the general path decides.
    """
    if frame[1:HEADER_SIZE] != _telemetry_header(codec):
        return None
    record = codec.decode_millis_exact(frame, "SiteTelemetry")
    if record is None:
        return None
    if record["site_id"] != site_id:
        raise _site_mismatch(record["site_id"], site_id)
    implausible = check_telemetry(record, received_ms, rules, limits)
    if implausible is not None:
        raise FrameRejectedError(implausible.reason, implausible.detail)
    # site_id (length, bytes), seq and event_time, then received_time's union branch and value.
    length, position = read_long(frame, HEADER_SIZE)
    _, position = read_long(frame, position + length)
    _, start = read_long(frame, position)
    branch, end = read_long(frame, start)
    if branch == 1:
        _, end = read_long(frame, end)
    stamp = _stamp_bytes(received_ms)
    return Accepted(_TELEMETRY, site_id, b"".join((frame[:start], b"\x02", stamp, frame[end:])))


@cache
def _telemetry_header(codec: AvroCodec) -> bytes:
    """The schema id bytes of the gateway's SiteTelemetry, when its fields start as the fast path
    expects; otherwise bytes no frame header has (the fast path never applies)."""
    schema = codec.registry.schema_by_id(codec.schema_id("SiteTelemetry"))
    head = tuple((f["name"], f["type"]) for f in schema["fields"][:len(_TELEMETRY_HEAD)])
    if head != _TELEMETRY_HEAD:
        return b""
    return codec.schema_id("SiteTelemetry").to_bytes(HEADER_SIZE - 1, "big")


def _site_mismatch(claimed: object, site_id: str) -> FrameRejectedError:
    return FrameRejectedError("site_mismatch",
                              f"frame speaks for site {claimed!r}, the token for {site_id!r}")


#: The received-time stamp's bytes, cached: every frame received within the same millisecond carries
#: the same stamp.
_stamp_bytes = lru_cache(maxsize=4)(write_long)


def check_record(record_name: str, record: Mapping[str, Any], now_ms: int, rules: Rules,
                 limits: SiteLimits | None) -> Implausible | None:
    """Why a schema-valid upstream record is implausible, or None (times as datetimes or epoch ms)."""
    # The checks take epoch ms; a binary frame's times decode as datetimes. Only the event time is checked.
    field = EVENT_TIME_FIELD[record_name]
    event = record.get(field)
    values = {**record, field: epoch_ms(event)} if isinstance(event, datetime) else record
    if record_name == "SiteTelemetry":
        return check_telemetry(values, now_ms, rules, limits)
    if record_name == "SitePlan":
        powers = values.get("power_kw")
        for power in powers if isinstance(powers, list) else ():
            if isinstance(power, bool) or not isinstance(power, int | float) or not math.isfinite(power):
                return Implausible(NOT_A_NUMBER, "power_kw must hold finite numbers")
            if abs(power) > rules.max_site_kw:
                return Implausible(OUT_OF_RANGE, f"planned power {power} kW is beyond "
                                   f"{rules.max_site_kw:.0f} kW, more than any home site can move")
    event_ms = values.get(field)
    if isinstance(event_ms, bool) or not isinstance(event_ms, int):
        return Implausible(NOT_A_NUMBER, f"{field} must be epoch milliseconds")
    return check_event_time(event_ms, now_ms, rules)


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
