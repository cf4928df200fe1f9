"""What travels on a device's WebSocket: frame types, encodings and the JSON form of records.

Binary frames carry one record in the project's Avro framing (the codec tells
which record by its schema id). Text frames carry JSON objects with a ``type``
field for simple devices; times in JSON are epoch milliseconds. A device picks
what it receives by offering a subprotocol: ``vpp.avro.v1`` gets Avro binary
frames, ``vpp.json.v1`` (or no subprotocol) gets JSON. Error frames are JSON
for everyone, since there is no Avro record for them.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from core.topics import COMMANDS_ACKS, PLANS_SITE, TELEMETRY_RAW
from schemas.times import epoch_ms

AVRO_SUBPROTOCOL = "vpp.avro.v1"
JSON_SUBPROTOCOL = "vpp.json.v1"


class Encoding(enum.Enum):
    """How the gateway writes records to one device."""

    AVRO = "avro"
    JSON = "json"

    @property
    def subprotocol(self) -> str:
        """The WebSocket subprotocol a device offers to get this encoding."""
        return AVRO_SUBPROTOCOL if self is Encoding.AVRO else JSON_SUBPROTOCOL


@dataclass(frozen=True)
class UpstreamKind:
    """A frame type a device may send: its JSON ``type``, Avro record and destination topic."""

    type: str
    record: str
    topic: str


UPSTREAM: tuple[UpstreamKind, ...] = (
    UpstreamKind("telemetry", "SiteTelemetry", TELEMETRY_RAW),
    UpstreamKind("ack", "CommandAck", COMMANDS_ACKS),
    UpstreamKind("plan", "SitePlan", PLANS_SITE),
)
UPSTREAM_BY_TYPE = {kind.type: kind for kind in UPSTREAM}
UPSTREAM_BY_RECORD = {kind.record: kind for kind in UPSTREAM}

#: Downstream JSON ``type`` of each record the gateway sends to devices.
DOWNSTREAM_TYPES = {"SiteCommand": "command", "PriceForecast": "prices", "StormWatch": "storm"}
DOWNSTREAM_RECORDS = {frame_type: record for record, frame_type in DOWNSTREAM_TYPES.items()}


def instant(value: datetime | int | float) -> datetime:
    """A UTC datetime from what a record may hold for a time: a datetime or epoch milliseconds."""
    if isinstance(value, datetime):
        return value
    return datetime.fromtimestamp(value / 1000, UTC)


def jsonable(record: Mapping[str, Any]) -> dict[str, Any]:
    """A record with its datetimes as epoch milliseconds, ready for ``json.dumps``."""
    return {key: epoch_ms(v) if isinstance(v, datetime) else v for key, v in record.items()}


def json_frame(frame_type: str, record: Mapping[str, Any]) -> str:
    """A JSON text frame: the record's fields plus ``type``."""
    return json.dumps({"type": frame_type, **jsonable(record)}, separators=(",", ":"))


def delivered_frame(count: int) -> str:
    """The text frame that tells a device its first ``count`` frames are safe (:mod:`edge_gateway.acks`).

    The JSON ``json.dumps`` writes for ``{"type": "delivered", "count": count}`` (compact), written
    directly: the gateway sends one a second to every device that asks for acknowledgements.
    """
    return f'{{"type":"delivered","count":{int(count)}}}'


def error_frame(reason: str, detail: str) -> str:
    """The text frame that tells a device why its frame was not accepted."""
    return json.dumps({"type": "error", "reason": reason, "detail": detail}, separators=(",", ":"))
