"""The digital twin of one site: its latest reading, its status, and what it contributes to its nodes.

Pure logic, no I/O: the telemetry dataflow keeps one :class:`SiteTwin` per site
inside a shard (see :mod:`operators.shard`), and the reference tests replay the
same functions to check the dataflow.

A reading is accepted only when it is newer than the one held, by event time and
then sequence number, so a late older reading never overwrites a newer one. The
status follows the age of the newest reading against the shard's clock:
ONLINE, then DELAYED after ``delayed_after_s``, then OFFLINE after
``offline_after_s``; a site never heard from is UNKNOWN.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, NamedTuple

from operators.ancestry import Ancestry
from schemas.times import epoch_ms

ONLINE = "ONLINE"
DELAYED = "DELAYED"
OFFLINE = "OFFLINE"
UNKNOWN = "UNKNOWN"
#: Without a new reading a status only moves forward along this order.
STATUS_RANK = {UNKNOWN: 0, ONLINE: 0, DELAYED: 1, OFFLINE: 2}

#: How long a full battery could keep up its rated power before "available power" tapers: a site
#: with energy for less than this many hours offers only energy / horizon.
AVAILABILITY_HORIZON_H = 0.25

# Positions in a contribution vector. Measured values count only ONLINE sites; the ``EST_`` values
# count every site with a reading, from its last known values, whatever its status.
BATTERY, SOLAR, LOAD, GRID = 0, 1, 2, 3
ENERGY, HEADROOM, AVAIL_DISCHARGE, AVAIL_CHARGE = 4, 5, 6, 7
EST_BATTERY, EST_ENERGY, EST_HEADROOM, EST_AVAIL_DISCHARGE, EST_AVAIL_CHARGE = 8, 9, 10, 11, 12
EXPECTED, REPORTING, DELAYED_COUNT, OFFLINE_COUNT = 13, 14, 15, 16
VECTOR_SIZE = 17
#: Positions holding kW or kWh (in :data:`UNITS_PER_KW` units); the others are plain counts.
QUANTITIES = range(EXPECTED)
#: Fixed-point units per kW (or kWh) in a contribution vector: micro-watts. Node sums are kept only as
#: differences, so they are integers: adding and taking back a contribution is exact, whatever
#: the magnitudes met on the way, and a sum cannot drift from its members' contributions. A site's
#: quantity is rounded to one micro-watt once, so a node of n sites is within n/2 micro-watts of
#: the float sum of its readings; plausibility bounds every reading, so the integers stay small.
UNITS_PER_KW = 1_000_000_000
ZERO: tuple[int, ...] = (0,) * VECTOR_SIZE


class Reading(NamedTuple):
    """The fields of one SiteTelemetry the twin keeps; times in epoch milliseconds."""

    event_ms: int
    seq: int
    soc_pct: float
    battery_kw: float
    solar_kw: float
    load_kw: float
    grid_kw: float
    battery_temp_c: float | None
    mode: str
    active_command_id: str | None

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Reading:
        """From a decoded SiteTelemetry value."""
        return cls(
            epoch_ms(record["event_time"]), record["seq"], record["soc_pct"],
            record["battery_kw"], record["solar_kw"], record["load_kw"], record["grid_kw"],
            record["battery_temp_c"], record["mode"], record["active_command_id"],
        )

    @classmethod
    def from_millis_record(cls, record: dict[str, Any]) -> Reading:
        """From a SiteTelemetry value decoded with times in epoch milliseconds (the hot path: the
        fields are picked in one C call and the tuple made without the NamedTuple constructor)."""
        return tuple.__new__(cls, _MILLIS_FIELDS(record))

    def is_newer_than(self, other: Reading | None) -> bool:
        """Ordered by event time, then sequence; an equal reading is not newer (replays are no-ops)."""
        return other is None or (self.event_ms, self.seq) > (other.event_ms, other.seq)


#: The SiteTelemetry fields of a :class:`Reading`, in its order (``event_time`` in epoch ms).
_MILLIS_FIELDS = itemgetter("event_time", "seq", "soc_pct", "battery_kw", "solar_kw", "load_kw", "grid_kw",
                            "battery_temp_c", "mode", "active_command_id")


def status_at(now_ms: int, last_seen_ms: int | None, delayed_after_ms: int, offline_after_ms: int) -> str:
    """The status of a site whose newest reading has event time ``last_seen_ms``, at ``now_ms``."""
    if last_seen_ms is None:
        return UNKNOWN
    age = now_ms - last_seen_ms
    if age >= offline_after_ms:
        return OFFLINE
    if age >= delayed_after_ms:
        return DELAYED
    return ONLINE


def status_deadline(status: str, last_seen_ms: int, delayed_after_ms: int,
                    offline_after_ms: int) -> int | None:
    """Event time at which a site in ``status`` changes status if nothing more is heard."""
    if status == ONLINE:
        return last_seen_ms + delayed_after_ms
    if status == DELAYED:
        return last_seen_ms + offline_after_ms
    return None


def energy_available_kwh(soc_pct: float, capacity_kwh: float, reserve_pct: float) -> float:
    """Energy the site can discharge before reaching its backup reserve."""
    return max(0.0, capacity_kwh * (soc_pct - reserve_pct) / 100.0)


def charge_headroom_kwh(soc_pct: float, capacity_kwh: float) -> float:
    """Energy the site can still take in before it is full."""
    return max(0.0, capacity_kwh * (100.0 - soc_pct) / 100.0)


def units(kw: float) -> int:
    """``kw`` (or kWh) in fixed-point units of the contribution vectors (:data:`UNITS_PER_KW`).

    ``kw`` is finite and bounded by plausibility (the dataflow refuses anything else before a twin
    holds it): a NaN or infinity has no integer and raises.
    """
    return round(kw * UNITS_PER_KW)


def from_units(value: int) -> float:
    """A summed quantity back in kW (or kWh): the float nearest the exact sum (int / int is exact)."""
    return value / UNITS_PER_KW


def contribution(reading: Reading | None, status: str, ancestry: Ancestry) -> tuple[int, ...]:
    """What one member site adds to each of its nodes, as a vector indexed by the constants above.

    Quantities are in fixed-point :func:`units`, counts are counts; every entry is an integer.
    """
    vector = [0] * VECTOR_SIZE
    vector[EXPECTED] = 1
    if status == DELAYED:
        vector[DELAYED_COUNT] = 1
    elif status != ONLINE:
        vector[OFFLINE_COUNT] = 1
    if reading is None:
        return tuple(vector)
    energy_kwh = energy_available_kwh(reading.soc_pct, ancestry.capacity_kwh, ancestry.reserve_pct)
    headroom_kwh = charge_headroom_kwh(reading.soc_pct, ancestry.capacity_kwh)
    energy, headroom = units(energy_kwh), units(headroom_kwh)
    discharge = units(min(ancestry.max_discharge_kw, energy_kwh / AVAILABILITY_HORIZON_H))
    charge = units(min(ancestry.max_charge_kw, headroom_kwh / AVAILABILITY_HORIZON_H))
    battery = units(reading.battery_kw)
    vector[EST_BATTERY] = battery
    vector[EST_ENERGY] = energy
    vector[EST_HEADROOM] = headroom
    vector[EST_AVAIL_DISCHARGE] = discharge
    vector[EST_AVAIL_CHARGE] = charge
    if status == ONLINE:
        vector[REPORTING] = 1
        vector[BATTERY] = battery
        vector[SOLAR] = units(reading.solar_kw)
        vector[LOAD] = units(reading.load_kw)
        vector[GRID] = units(reading.grid_kw)
        vector[ENERGY] = energy
        vector[HEADROOM] = headroom
        vector[AVAIL_DISCHARGE] = discharge
        vector[AVAIL_CHARGE] = charge
    return tuple(vector)


@dataclass(slots=True)
class SiteTwin:
    """Everything the dataflow holds for one site; small, because a shard holds thousands."""

    site_id: str
    reading: Reading | None = None
    status: str = UNKNOWN
    ancestry: Ancestry | None = None
    #: The vector last sent, so the next change is sent as a difference.
    sent_vector: tuple[int, ...] = ZERO
    #: The chains of ancestors (hierarchy, node ids) the vector was added to.
    sent_chains: tuple[tuple[str, tuple[str, ...]], ...] = ()
    #: Whether this site is listed among its nodes' stale (not ONLINE) members, and with which time.
    sent_stale_ms: int | None = None
    #: Clock time at which the contribution must be looked at again even if nothing is heard
    #: (a status deadline or a membership change taking effect); None: nothing pending.
    recheck_ms: int | None = None
    #: Open minute windows by minute start (epoch ms).
    windows: dict[int, Any] = field(default_factory=dict)

    @property
    def last_seen_ms(self) -> int | None:
        return None if self.reading is None else self.reading.event_ms

    def version(self) -> tuple[int, int]:
        """Orders the twin's states: newer reading first, then status progression, then ancestry.

        A replay after a crash writes the same versions again, so Redis keeps the newest state.
        """
        last_seen = self.last_seen_ms or 0
        return last_seen * 4 + STATUS_RANK[self.status], self.ancestry.version if self.ancestry else 0

    def redis_fields(self, now_ms: int, with_limits: bool = True) -> dict[str, str | float | int]:
        """The ``site:{id}`` hash: latest telemetry, status, last_seen, ancestry version and limits.

        The limits change only with a new ancestry, so most writes leave them out (``with_limits``).
        """
        fields: dict[str, str | float | int] = {
            "site_id": self.site_id, "status": self.status, "as_of": now_ms}
        reading = self.reading
        if reading is not None:
            fields.update(
                last_seen=reading.event_ms, seq=reading.seq, soc_pct=reading.soc_pct,
                battery_kw=reading.battery_kw, solar_kw=reading.solar_kw, load_kw=reading.load_kw,
                grid_kw=reading.grid_kw, mode=reading.mode,
                battery_temp_c="" if reading.battery_temp_c is None else reading.battery_temp_c,
                active_command_id=reading.active_command_id or "",
            )
        ancestry = self.ancestry
        if ancestry is not None and with_limits:
            fields.update(
                ancestry_version=ancestry.version, capacity_kwh=ancestry.capacity_kwh,
                reserve_pct=ancestry.reserve_pct, max_charge_kw=ancestry.max_charge_kw,
                max_discharge_kw=ancestry.max_discharge_kw, region=ancestry.region,
            )
        if ancestry is not None and reading is not None:
            fields["energy_available_kwh"] = energy_available_kwh(
                reading.soc_pct, ancestry.capacity_kwh, ancestry.reserve_pct)
            fields["charge_headroom_kwh"] = charge_headroom_kwh(reading.soc_pct, ancestry.capacity_kwh)
        return fields
