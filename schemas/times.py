"""Avro ``timestamp-millis`` as Python values, exactly.

``int(dt.timestamp() * 1000)`` goes through a binary float and lands one
millisecond low for about a quarter of all millisecond values; every
conversion in the project goes through :func:`epoch_ms` instead.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)


def epoch_ms(value: datetime) -> int:
    """Milliseconds since the epoch of an aware datetime, in integer arithmetic."""
    return (value - EPOCH) // _MILLISECOND


def wall_ms() -> int:
    """The wall clock now, as epoch milliseconds."""
    return time.time_ns() // 1_000_000


def from_epoch_ms(ms: int) -> datetime:
    """The UTC datetime of epoch milliseconds; ``epoch_ms(from_epoch_ms(ms)) == ms``.

    ``ms / 1000`` is a float, but ``fromtimestamp`` rounds to whole microseconds, and the
    float's error is far below half a microsecond for any year a record can hold, so the
    millisecond comes back exactly (checked by a property test). It is also about three
    times faster than adding a timedelta to the epoch, which matters on the hot paths.
    """
    return datetime.fromtimestamp(ms / 1000, UTC)
