"""Which late readings complete history: only those of a site that went quiet, never a steady site's.

A site cut off mid-minute uploads its readings late: they complete the minute it
went quiet in and fill the minutes it was silent, also when it was back before
that minute closed (a short outage whose upload is slower than the lateness). A site that kept reporting and
whose reading merely arrived late (an out-of-order producer) has its minute
written already from what was in time; a late reading must not replace that
row with a window of its own, so it is counted as late and left out, as before.
"""

from __future__ import annotations

from core.rows import SiteWindow
from operators.shard import Shard, ShardConfig
from operators.twin import Reading
from schemas.times import epoch_ms

T0 = 1_790_000_000_000 - 1_790_000_000_000 % 60_000
CONFIG = ShardConfig(delayed_after_ms=5_000, offline_after_ms=60_000, lateness_ms=30_000,
                     expected_samples_per_minute=60.0, node_groups=1, backfill_horizon_ms=900_000)


def _reading(second: int) -> Reading:
    return Reading(T0 + second * 1000, second, 50.0, float(second % 7), 1.0, 0.5, -0.5, None, "IDLE", None)


def test_a_quiet_sites_upload_completes_its_minutes_and_a_steady_sites_late_reading_does_not() -> None:
    shard = Shard(0, CONFIG)
    rows: list[SiteWindow] = []
    held: list[tuple[str, Reading]] = []
    for second in range(200):
        batch = []
        for site in ("steady", "cut", "short"):
            reading = _reading(second)
            if (site == "steady" and second == 30) or (site == "cut" and 30 <= second < 150) or (
                    site == "short" and 50 <= second < 70):
                held.append((site, reading))
            else:
                batch.append((site, reading))
        wall = T0 + second * 1000 + 100
        out = shard.apply(batch, [], wall, "p", T0 + second * 1000)
        rows += out.site_rows
        rows += shard.tick(wall).site_rows
    out = shard.apply(held, [], T0 + 200_100, "p", T0 + 199_000)
    rows += out.site_rows
    late, backfilled = out.late_readings, out.backfilled_readings
    rows += shard.apply([], [], T0 + 300_100, "p", T0 + 300_000).site_rows  # the open minutes close

    newest: dict[tuple[str, int], SiteWindow] = {}
    for row in rows:
        key = (row.site_id, epoch_ms(row.start))
        if key not in newest or row.version > newest[key].version:
            newest[key] = row
    assert late == 1, "the steady site's late reading is counted and left out"
    assert backfilled == 90 + 20, "every held reading of a closed minute completed it (120-149 s: still open)"
    assert newest[("steady", T0)].samples == 59, "the steady site's minute was not overwritten"
    assert [newest[("cut", T0 + m * 60_000)].samples for m in range(4)] == [60, 60, 60, 20]
    assert newest[("cut", T0)].version == 2 and newest[("cut", T0 + 60_000)].version == 1
    # Back before its minute closed, so never quiet at a close: the gap its live reading showed
    # kept the windows its upload completes.
    assert [newest[("short", T0 + m * 60_000)].samples for m in range(2)] == [60, 60]


def test_a_late_reading_of_a_minute_the_site_reported_after_is_late_however_the_input_was_batched() -> None:
    """A backlog read in big batches closes several minutes at once. A site that went quiet in the
    last of them reported after the earlier ones closed (in event time): a late reading for one of
    those is a steady site's late reading, counted and left out, as with one minute per close."""
    for starts in (list(range(200)), [0, 60]):  # one second per batch; 0-59 s, then 60-199 s at once
        shard = Shard(0, CONFIG)
        for start, end in zip(starts, [*starts[1:], 200], strict=True):
            batch = [("other", _reading(s)) for s in range(start, end)]
            batch += [("quiet", _reading(s)) for s in range(start, end) if s < 100 and s != 30]
            shard.apply(batch, [], T0 + (end - 1) * 1000 + 100, "p", T0 + (end - 1) * 1000)
        out = shard.apply([("quiet", _reading(30))], [], T0 + 200_100, "p", T0 + 199_000)
        assert (out.late_readings, out.backfilled_readings) == (1, 0), f"{len(starts)} batches"


def test_the_kept_windows_are_in_the_snapshot_and_a_v4_snapshot_without_them_loads_empty() -> None:
    import pickle
    from dataclasses import replace

    shard = Shard(0, CONFIG)
    for second in range(150):
        batch = [("other", _reading(second))] + ([("cut", _reading(second))] if second < 30 else [])
        shard.apply(batch, [], T0 + second * 1000 + 100, "p", T0 + second * 1000)
    state = shard.state()
    assert dict(state.backfill).keys() == {"cut"}
    restored = Shard.from_state(pickle.loads(pickle.dumps(state)), CONFIG, T0 + 150_100)
    upload = [("cut", _reading(s)) for s in range(30, 60)]
    want = shard.apply(upload, [], T0 + 150_100, "p", T0 + 149_000)
    got = restored.apply(upload, [], T0 + 150_100, "p", T0 + 149_000)
    assert got.backfilled_readings == want.backfilled_readings == 30
    assert got.site_rows == want.site_rows and got.groups == want.groups
    # A v4 snapshot written before backfill has no such field: unpickled, the class default is used.
    old = replace(state, backfill=())
    del old.__dict__["backfill"]
    assert Shard.from_state(pickle.loads(pickle.dumps(old)), CONFIG, T0 + 150_100).backfill == {}
