"""``vpp bench rollups``: refresh the hour and day rollups after one batch of site minutes.

History: ``sites`` sites with a minute row for every minute of one day and an
hour row for every hour of it, on a private stack (100,000 sites: 144 M minute
rows, a few minutes to seed). The figure: the time to refresh the rollups of one
batch of 1,000 site-minutes (:meth:`HistoryStore.refresh_rollups` with the
batch's ids, what every flush of the telemetry dataflow does). Baseline in the
same run: the previous full refresh, which recomputed every id in the range
(``ids=None``), so it grew with the fleet rather than with the batch.
"""

from __future__ import annotations

import statistics
import time
from datetime import UTC, datetime, timedelta

from bench.local import private_stack
from core import history
from core.history import HistoryStore

HOUR = datetime(2026, 6, 1, 12, tzinfo=UTC)
BATCH = 1_000
ROUNDS = 5


def _seed(store: HistoryStore, sites: int) -> None:
    """Minutes and hours of the day for every site, generated inside ClickHouse an hour at a time."""
    db = store.db
    day = f"toDateTime('{HOUR:%Y-%m-%d}', 'UTC')"
    for hour in range(24):
        store.client.command(
            f"INSERT INTO {db}.site_minute SELECT concat('site-', toString(number % {sites})), "
            f"{day} + {hour * 3600} + 60 * intDiv(number, {sites}), "
            "1.5, 0.5, 2.5, 2.0, 1.0, -0.5, 50.0, 6.0, 60, 1.0, 1 "
            f"FROM numbers({sites * 60})")
    store.client.command(
        f"INSERT INTO {db}.site_hour SELECT concat('site-', toString(number % {sites})), "
        f"{day} + 3600 * intDiv(number, {sites}), "
        "1.5, 0.5, 2.5, 2.0, 1.0, -0.5, 50.0, 6.0, 3600, 1.0, 1 "
        f"FROM numbers({sites * 24})")


def _time_ms(store: HistoryStore, ids: set[str] | None) -> float:
    minute = HOUR + timedelta(minutes=30)
    timings = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        store.refresh_rollups("site", minute, minute, ids)
        timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings)


def run(quick: bool) -> dict[str, float]:
    """Measure and return the figures."""
    sites = 10_000 if quick else 100_000
    with private_stack("vpp-bench-rollups-") as settings:
        store = HistoryStore(history.connect(settings))
        started = time.perf_counter()
        _seed(store, sites)
        seed_s = time.perf_counter() - started
        batch = {f"site-{i}" for i in range(0, sites, sites // BATCH)}
        batch_ms = _time_ms(store, batch)
        full_ms = _time_ms(store, None)
    return {
        "sites": float(sites),
        "batch_site_minutes": float(len(batch)),
        "rollup_refresh_ms": batch_ms,
        "full_refresh_ms": full_ms,
        "speedup": full_ms / batch_ms,
        "seed_s": seed_s,
    }
