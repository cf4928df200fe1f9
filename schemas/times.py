"""Avro ``timestamp-millis`` as Python values, exactly.

``int(dt.timestamp() * 1000)`` goes through a binary float and lands one
millisecond low for about a quarter of all millisecond values; every
conversion in the project goes through :func:`epoch_ms` instead.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)


def epoch_ms(value: datetime) -> int:
    """Milliseconds since the epoch of an aware datetime, in integer arithmetic."""
    return (value - EPOCH) // _MILLISECOND
