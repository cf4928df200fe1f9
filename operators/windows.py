"""One-minute event-time windows per site, and their contribution to node minutes.

A reading lands in the minute of its event time. A minute closes when the
shard's clock passes its end plus the allowed lateness; a reading for a closed
minute is late and left out (and counted). Re-delivered readings (same
sequence number) are counted once, so an at-least-once source cannot inflate a
mean.

Node minutes are sums over member sites (membership at the minute's start) of
the site minutes: summed means, summed last energy, and an envelope
``battery_kw_min``/``battery_kw_max`` (the sum of the sites' minima and maxima:
the aggregate cannot have left it during the minute).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from core.rows import SiteWindow
from operators.twin import Reading, charge_headroom_kwh, energy_available_kwh
from schemas.times import from_epoch_ms

MINUTE_MS = 60_000
#: Sequence numbers remembered per window for de-duplication (as bits of one integer).
SEEN_SPAN = 4096

# Positions in a node-minute partial vector.
P_BATTERY, P_BATTERY_MIN, P_BATTERY_MAX, P_SOLAR, P_LOAD, P_GRID = 0, 1, 2, 3, 4, 5
P_ENERGY, P_HEADROOM, P_EXPECTED, P_REPORTING = 6, 7, 8, 9
PARTIAL_SIZE = 10


def minute_of(t_ms: int) -> int:
    """Start (epoch ms) of the minute holding ``t_ms``."""
    return t_ms - t_ms % MINUTE_MS


@dataclass(slots=True)
class MinuteWindow:
    """Running statistics of one site over one minute."""

    samples: int = 0
    battery_sum: float = 0.0
    battery_min: float = float("inf")
    battery_max: float = float("-inf")
    solar_sum: float = 0.0
    load_sum: float = 0.0
    grid_sum: float = 0.0
    last_key: tuple[int, int] = (-1, -1)
    last_soc: float = 0.0
    seen_base: int = -1
    seen_mask: int = 0

    def _first_time(self, seq: int) -> bool:
        if self.seen_base < 0:
            self.seen_base = seq
        offset = seq - self.seen_base
        if offset < 0:
            if -offset >= SEEN_SPAN:
                return True
            self.seen_mask <<= -offset
            self.seen_base = seq
            offset = 0
        if offset >= SEEN_SPAN:
            return True
        bit = 1 << offset
        if self.seen_mask & bit:
            return False
        self.seen_mask |= bit
        return True

    def add(self, reading: Reading) -> bool:
        """Count a reading; False when it was already counted."""
        if not self._first_time(reading.seq):
            return False
        battery = reading.battery_kw
        self.samples += 1
        self.battery_sum += battery
        self.battery_min = min(self.battery_min, battery)
        self.battery_max = max(self.battery_max, battery)
        self.solar_sum += reading.solar_kw
        self.load_sum += reading.load_kw
        self.grid_sum += reading.grid_kw
        key = (reading.event_ms, reading.seq)
        if key > self.last_key:
            self.last_key = key
            self.last_soc = reading.soc_pct
        return True

    def site_row(self, site_id: str, start_ms: int, capacity_kwh: float, reserve_pct: float,
                 expected_samples: float) -> SiteWindow:
        n = self.samples
        return SiteWindow(
            site_id=site_id, start=from_epoch_ms(start_ms),
            battery_kw_mean=self.battery_sum / n, battery_kw_min=self.battery_min,
            battery_kw_max=self.battery_max, solar_kw_mean=self.solar_sum / n,
            load_kw_mean=self.load_sum / n, grid_kw_mean=self.grid_sum / n,
            soc_pct_last=self.last_soc,
            energy_available_kwh_last=energy_available_kwh(self.last_soc, capacity_kwh, reserve_pct),
            samples=n, coverage=min(1.0, n / expected_samples), version=1,
        )

    def partial(self, capacity_kwh: float, reserve_pct: float) -> tuple[float, ...]:
        """This site's share of a node minute (a reporting member)."""
        n = self.samples
        return (
            self.battery_sum / n, self.battery_min, self.battery_max,
            self.solar_sum / n, self.load_sum / n, self.grid_sum / n,
            energy_available_kwh(self.last_soc, capacity_kwh, reserve_pct),
            charge_headroom_kwh(self.last_soc, capacity_kwh),
            1.0, 1.0,
        )


#: The share of a member site that sent nothing in the minute: expected, not reporting.
SILENT_PARTIAL: tuple[float, ...] = (0.0,) * P_EXPECTED + (1.0, 0.0)


def add_into(total: list[float], part: Sequence[float]) -> None:
    """``total += part``, element-wise, in place."""
    for i, value in enumerate(part):
        total[i] += value
