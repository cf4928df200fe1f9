"""A batch of readings as columns: what the decode step hands a shard.

The decode step reads a poll of SiteTelemetry straight into arrays
(:mod:`schemas.columnread`) and the shard writes arrays into its site columns
(:mod:`operators.site_columns`); in between, a batch stays arrays: one per
field, a row per reading, in the order the readings arrived (arrival order
decides ties and the order floats are summed in minute windows). Readings made
one at a time (tests, tools, records the codec decoded) become columns with
:meth:`ReadingColumns.from_readings`; iterating gives ``(site_id, Reading)``
pairs back.

Pure data, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from operators.twin import Reading

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
Objects = npt.NDArray[np.object_]

#: The float fields, named as the shard's site columns name them, in :class:`Reading` order.
FLOAT_FIELDS = ("soc", "battery", "solar", "load", "grid", "temp")


@dataclass(slots=True)
class ReadingColumns:
    """Readings of sites, a row each; ``temp`` is NaN where no temperature was reported."""

    site_ids: list[str]
    event_ms: I64
    seq: I64
    floats: dict[str, F64]
    mode: Objects
    command: Objects

    def __len__(self) -> int:
        return len(self.site_ids)

    def __iter__(self) -> Iterator[tuple[str, Reading]]:
        return (self.pair(i) for i in range(len(self.site_ids)))

    def pair(self, index: int) -> tuple[str, Reading]:
        """Row ``index`` as ``(site_id, Reading)``."""
        return self.site_ids[index], self.reading(index)

    def reading(self, index: int) -> Reading:
        """Row ``index`` as a :class:`Reading` (for the rare reading looked at on its own)."""
        f = self.floats
        temp = float(f["temp"][index])
        return Reading(int(self.event_ms[index]), int(self.seq[index]), float(f["soc"][index]),
                       float(f["battery"][index]), float(f["solar"][index]), float(f["load"][index]),
                       float(f["grid"][index]), None if math.isnan(temp) else temp,
                       self.mode[index], self.command[index])

    def take(self, rows: I64) -> ReadingColumns:
        """The rows ``rows``, in that order."""
        return ReadingColumns([self.site_ids[i] for i in rows.tolist()], self.event_ms[rows], self.seq[rows],
                              {name: column[rows] for name, column in self.floats.items()},
                              self.mode[rows], self.command[rows])

    @classmethod
    def from_readings(cls, readings: Sequence[tuple[str, Reading]]) -> ReadingColumns:
        """Columns of ``(site_id, Reading)`` pairs, in their order."""
        if not readings:
            return cls.empty()
        site_ids, values = zip(*readings, strict=True)
        fields = list(zip(*values, strict=True))
        return cls(list(site_ids), np.array(fields[0], dtype=np.int64), np.array(fields[1], dtype=np.int64),
                   {name: np.array(fields[2 + k], dtype=np.float64) for k, name in enumerate(FLOAT_FIELDS)},
                   _objects(fields[8]), _objects(fields[9]))

    @classmethod
    def empty(cls) -> ReadingColumns:
        none = np.zeros(0, dtype=np.int64)
        return cls([], none, none, {name: np.zeros(0) for name in FLOAT_FIELDS}, _objects(()), _objects(()))

    @classmethod
    def concat(cls, parts: Sequence[ReadingColumns]) -> ReadingColumns:
        """The rows of ``parts``, one after the other."""
        if len(parts) == 1:
            return parts[0]
        if not parts:
            return cls.empty()
        return cls([s for part in parts for s in part.site_ids],
                   np.concatenate([p.event_ms for p in parts]), np.concatenate([p.seq for p in parts]),
                   {name: np.concatenate([p.floats[name] for p in parts]) for name in FLOAT_FIELDS},
                   np.concatenate([p.mode for p in parts]), np.concatenate([p.command for p in parts]))


def _objects(values: Sequence[object]) -> Objects:
    """An object array of ``values`` (strings or None), never split into characters."""
    array = np.empty(len(values), dtype=object)
    array[:] = list(values)
    return array
