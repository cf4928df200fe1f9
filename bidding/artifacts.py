"""Content-addressed artifacts: one canonical serialisation of every task input and output, and its sha256.

Backtests replay stored inputs through today's logic and compare output hashes with the
stored ones, so the same value must always give the same bytes: JSON with sorted keys and
no whitespace, floats in Python's shortest round-trip form, tuples as lists, UTC datetimes
as ISO 8601, frozen dataclasses as objects tagged with their type name, numpy arrays as
lists. NaN and infinities are refused (no canonical JSON form, and no market value is NaN).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return {"__type__": type(value).__name__, **fields}
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r} in an artifact: times are UTC-aware")
        return value.astimezone(UTC).isoformat()
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return _plain(value.item())
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    raise TypeError(f"{type(value).__name__} has no canonical artifact form")


def canonical(value: Any) -> bytes:
    """The one byte form of ``value`` whose hash names it."""
    return json.dumps(_plain(value), sort_keys=True, separators=(",", ":"), allow_nan=False,
                      ensure_ascii=True).encode()


@dataclass(frozen=True, slots=True)
class Artifact:
    """An immutable task input or output: ``artifact_id`` is the sha256 of ``body``."""

    artifact_id: str
    kind: str
    body: bytes

    def value(self) -> Any:
        """The decoded JSON (dataclasses come back as tagged objects)."""
        return json.loads(self.body)


def artifact(kind: str, value: Any) -> Artifact:
    """Serialise ``value`` canonically and name it by its sha256."""
    body = canonical(value)
    return Artifact(hashlib.sha256(body).hexdigest(), kind, body)
