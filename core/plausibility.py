"""What a device may plausibly say: one rule set for the gateway and, again, the dataflows. Pure.

A reading is checked twice (defence in depth): at the edge gateway before it
reaches ``telemetry.raw``, and in the telemetry dataflow after decoding, since
any producer with access to the topic (or a future bug in the gateway) can
write to it directly. Both call :func:`check_telemetry` with the same
:class:`Rules`, so the two cannot disagree about what is plausible.

Bounds come from physics (a state of charge is a percentage, solar and load
are not negative, a home site does not move more than :attr:`Rules.max_site_kw`)
and, where the site is known, from its registered limits (battery power within
:attr:`Rules.rating_margin` of the inverter's rating). Event time is bounded by
the checker's clock: at most :attr:`Rules.max_ahead_ms` ahead (clock skew) and
at most :attr:`Rules.max_behind_ms` behind (the store-and-forward horizon a
device may buffer for), so no device can move a clock or a window on its word
alone.

Booleans are refused where numbers belong: JSON ``true`` is an ``int`` to
Python and would otherwise pass as 1.0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: Stable labels of the reasons a record is refused (metrics labels, DLQ reasons, error frames).
NOT_A_NUMBER = "not_a_number"
OUT_OF_RANGE = "out_of_range"
BEYOND_RATING = "beyond_rating"
FUTURE_EVENT_TIME = "future_event_time"
STALE_EVENT_TIME = "stale_event_time"
REASONS = (NOT_A_NUMBER, OUT_OF_RANGE, BEYOND_RATING, FUTURE_EVENT_TIME, STALE_EVENT_TIME)

TELEMETRY_POWERS = ("battery_kw", "solar_kw", "load_kw", "grid_kw")


@dataclass(frozen=True)
class Rules:
    """The bounds; the defaults suit home batteries, the settings can change them per deployment."""

    #: No power field of one home site is ever beyond this, registered or not (kW).
    max_site_kw: float = 100.0
    #: Battery power may exceed the registered rating by this factor (meters and inverters overshoot).
    rating_margin: float = 1.25
    #: Event time at most this far ahead of the checker's clock (device clock skew), ms.
    max_ahead_ms: int = 10_000
    #: Event time at most this far behind the checker's clock (store-and-forward horizon), ms.
    max_behind_ms: int = 7 * 24 * 3_600_000
    min_temp_c: float = -60.0
    max_temp_c: float = 120.0


@dataclass(frozen=True)
class SiteLimits:
    """A site's registered ratings (from the asset registry), the tighter bounds of its readings."""

    max_charge_kw: float
    max_discharge_kw: float


@dataclass(frozen=True)
class Implausible:
    """Why a record was refused: ``reason`` is one of :data:`REASONS`, ``detail`` says what to fix."""

    reason: str
    detail: str


def check_event_time(event_ms: int, now_ms: int, rules: Rules) -> Implausible | None:
    """None if ``event_ms`` lies within the allowed skew ahead and the horizon behind ``now_ms``."""
    if event_ms > now_ms + rules.max_ahead_ms:
        return Implausible(FUTURE_EVENT_TIME, f"event time is {(event_ms - now_ms) / 1000:.1f} s ahead of "
                           f"the clock (at most {rules.max_ahead_ms / 1000:.0f} s allowed): "
                           "fix the device clock")
    if event_ms < now_ms - rules.max_behind_ms:
        return Implausible(STALE_EVENT_TIME, f"event time is {(now_ms - event_ms) / 3_600_000:.1f} h old "
                           f"(at most {rules.max_behind_ms / 3_600_000:.0f} h of backlog is accepted)")
    return None


def _number(record: Mapping[str, Any], name: str) -> float | Implausible | None:
    value = record.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return Implausible(NOT_A_NUMBER, f"{name} must be a number, not {type(value).__name__}")
    if not math.isfinite(value):
        return Implausible(NOT_A_NUMBER, f"{name} is not a finite number")
    return float(value)


def check_telemetry(record: Mapping[str, Any], now_ms: int, rules: Rules,
                    limits: SiteLimits | None = None) -> Implausible | None:
    """None if a SiteTelemetry record (times as epoch ms) is plausible, else why not.

    Every reading passes here twice (gateway, dataflow), so the common case, a record of plain
    floats within every bound, is decided by one chain of comparisons; anything else (NaN fails
    every comparison, a bool or an int is not a float) goes to :func:`diagnose_telemetry`, which
    applies the same rules one by one and says which failed. ``tests/core/test_plausibility.py``
    checks the two agree.
    """
    try:
        battery, solar, load = record["battery_kw"], record["solar_kw"], record["load_kw"]
        grid, soc, temp = record["grid_kw"], record["soc_pct"], record["battery_temp_c"]
        seq, event_ms = record["seq"], record["event_time"]
    except KeyError:
        return diagnose_telemetry(record, now_ms, rules, limits)
    top = rules.max_site_kw
    low, high = (-top, top) if limits is None else (max(-top, -limits.max_charge_kw * rules.rating_margin),
                                                    min(top, limits.max_discharge_kw * rules.rating_margin))
    if (type(battery) is float and type(solar) is float and type(load) is float and type(grid) is float
            and type(soc) is float and type(seq) is int and type(event_ms) is int
            and (temp is None or (type(temp) is float and rules.min_temp_c <= temp <= rules.max_temp_c))
            and low <= battery <= high and 0.0 <= solar <= top and 0.0 <= load <= top
            and -top <= grid <= top
            and 0.0 <= soc <= 100.0 and seq >= 0
            and now_ms - rules.max_behind_ms <= event_ms <= now_ms + rules.max_ahead_ms):
        return None
    return diagnose_telemetry(record, now_ms, rules, limits)


def diagnose_telemetry(record: Mapping[str, Any], now_ms: int, rules: Rules,
                       limits: SiteLimits | None = None) -> Implausible | None:
    """The rules of :func:`check_telemetry` one at a time: the first that fails, or None."""
    values: dict[str, float] = {}
    for name in (*TELEMETRY_POWERS, "soc_pct", "battery_temp_c"):
        value = _number(record, name)
        if isinstance(value, Implausible):
            return value
        if value is not None:
            values[name] = value
    soc = values.get("soc_pct")
    if soc is not None and not 0.0 <= soc <= 100.0:
        return Implausible(OUT_OF_RANGE, f"soc_pct {soc} is outside 0..100")
    for name in ("solar_kw", "load_kw"):
        if values.get(name, 0.0) < 0.0:
            return Implausible(OUT_OF_RANGE, f"{name} {values[name]} is negative")
    for name in TELEMETRY_POWERS:
        if abs(values.get(name, 0.0)) > rules.max_site_kw:
            return Implausible(OUT_OF_RANGE, f"{name} {values[name]} kW is beyond "
                               f"{rules.max_site_kw:.0f} kW, more than any home site can move")
    temp = values.get("battery_temp_c")
    if temp is not None and not rules.min_temp_c <= temp <= rules.max_temp_c:
        return Implausible(OUT_OF_RANGE, f"battery_temp_c {temp} is outside "
                           f"{rules.min_temp_c:.0f}..{rules.max_temp_c:.0f}")
    battery = values.get("battery_kw", 0.0)
    if limits is not None:
        rating = limits.max_discharge_kw if battery >= 0 else limits.max_charge_kw
        if abs(battery) > rating * rules.rating_margin:
            return Implausible(BEYOND_RATING, f"battery_kw {battery} is beyond the site's registered "
                               f"{'discharge' if battery >= 0 else 'charge'} rating of {rating} kW")
    seq = record.get("seq")
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        return Implausible(OUT_OF_RANGE, f"seq must be a non-negative integer, not {seq!r}")
    event_ms = record.get("event_time")
    if isinstance(event_ms, bool) or not isinstance(event_ms, int):
        return Implausible(NOT_A_NUMBER, "event_time must be epoch milliseconds")
    return check_event_time(event_ms, now_ms, rules)


def plausible_rows(columns: Mapping[str, Any], now_ms: int, rules: Rules) -> Any:
    """:func:`check_telemetry` over columns of many records at once: a boolean array, true where the
    record passes (a row that fails goes through :func:`check_telemetry` for its reason).

    ``columns`` holds numpy arrays under the SiteTelemetry field names (``event_time`` in epoch ms;
    ``battery_temp_c`` NaN where ``temp_null`` is true, i.e. not reported); Avro types guarantee
    numbers are floats and integers, so only the bounds are left to check. NaN fails every bound.
    """
    top = rules.max_site_kw
    battery, solar, load = columns["battery_kw"], columns["solar_kw"], columns["load_kw"]
    grid, soc, temp = columns["grid_kw"], columns["soc_pct"], columns["battery_temp_c"]
    event = columns["event_time"]
    return ((-top <= battery) & (battery <= top) & (solar >= 0.0) & (solar <= top)
            & (load >= 0.0) & (load <= top) & (-top <= grid) & (grid <= top)
            & (soc >= 0.0) & (soc <= 100.0) & (columns["seq"] >= 0)
            & (now_ms - rules.max_behind_ms <= event) & (event <= now_ms + rules.max_ahead_ms)
            & (columns["temp_null"] | ((rules.min_temp_c <= temp) & (temp <= rules.max_temp_c))))
