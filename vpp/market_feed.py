"""The local market feed: a simulated day-ahead market writing ``market_prices`` for each price region.

There is no real market connection in the local system. The feed replays the
pinned real series named by ``VPP_MARKET_PRICE_SERIES`` (see
:mod:`forecast.replay` for the calendar mapping): at start it writes the past
``VPP_MARKET_HISTORY_WEEKS`` weeks up to the last published day, then each next
day's prices at the day-ahead publication time. Rows carry the series as
``source``, so every reader can tell the prices are simulated. With no series
configured or its dataset missing it refuses with how to fix it; it never
invents prices. Production points an adapter for a real market at the same table.

Price regions are the asset registry's ``region`` nodes: the gateway delivers a
region's ``prices.forecast`` to the sites whose token names that region.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from core.config import Settings
from core.history import HistoryStore
from core.rows import MarketPrice
from forecast.replay import known_until, published_at, replay
from forecast.series import DAY, Series
from vpp import dataset_series
from vpp.datasets import DatasetError


class MarketFeedError(RuntimeError):
    """The feed cannot run as configured; the message says how to fix it."""


def load_series(settings: Settings) -> Series:
    """The configured replay series, or a refusal that says how to configure one."""
    spec = settings.market_price_series.strip()
    if not spec:
        raise MarketFeedError("no market price series configured: set "
                              "VPP_MARKET_PRICE_SERIES=smard:ZONE:YEAR (e.g. smard:DE:2018) and run "
                              "`vpp datasets fetch`")
    parts = spec.split(":")
    if len(parts) != 3 or parts[0] != "smard" or not parts[2].isdigit():
        raise MarketFeedError(f"VPP_MARKET_PRICE_SERIES={spec!r} is not smard:ZONE:YEAR (e.g. smard:DE:2018)")
    try:
        return dataset_series.smard(settings.datasets_dir, parts[1], int(parts[2]))
    except DatasetError as exc:
        raise MarketFeedError(f"market price series {spec}: {exc} (run `vpp datasets fetch`)") from exc


@dataclass(frozen=True, slots=True)
class MarketFeed:
    """Publishes the replayed series' prices for ``regions`` into the history store."""

    series: Series
    regions: tuple[str, ...]
    publish_at: time

    @classmethod
    def from_settings(cls, settings: Settings, regions: list[str]) -> MarketFeed:
        """The feed of the configured series; refuses with no region to price."""
        if not regions:
            raise MarketFeedError("no price region: the asset registry has no region node "
                                  "(load a fleet with `vpp fleet ...` or pass --region)")
        hh, mm = (int(p) for p in settings.market_publish_time.split(":"))
        return cls(load_series(settings), tuple(regions), time(hh, mm))

    def prices(self, first: datetime, end: datetime) -> list[MarketPrice]:
        """The rows of every region for the steps in [first, end), each stamped with its publication."""
        step = self.series.step
        count = int((end - first) / step)
        values = replay(self.series, first, count)
        minutes = int(step.total_seconds() // 60)
        rows = []
        for i in range(count):
            start = first + i * step
            published = published_at(start, self.series.tz, self.publish_at)
            rows += [MarketPrice(region, start, minutes, float(values[i]), published, self.series.name)
                     for region in self.regions]
        return rows

    def publish(self, store: HistoryStore, now: datetime, since: datetime | None = None,
                weeks: int = 8) -> datetime:
        """Write every price published by ``now`` from ``since`` (default ``weeks`` back); return its end.

        Re-writing a written interval replaces it with the same value, so a restart is harmless.
        """
        end = known_until(now.astimezone(UTC), self.series.tz, self.publish_at)
        step_s = int(self.series.step.total_seconds())
        first = since or end - weeks * 7 * DAY
        first = datetime.fromtimestamp(int(first.timestamp()) // step_s * step_s, UTC)
        if first < end:
            store.insert_market_prices(self.prices(first, end))
        return max(end, first)


def next_publication(now: datetime, tz: str, publish_at: time) -> datetime:
    """The next moment after ``now`` at which a new day's prices are published."""
    zone = ZoneInfo(tz)
    local = now.astimezone(zone)
    today = datetime.combine(local.date(), publish_at, zone)
    due = today if local < today else datetime.combine(local.date() + timedelta(days=1), publish_at, zone)
    return due.astimezone(UTC)
