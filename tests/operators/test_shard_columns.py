"""The shard's columns agree with the per-site functions they replace (issue 21).

The brute-force reference checks (tests/operators/test_telemetry_state.py, tests/dataflows,
tests/integration) are the contract for the aggregates; these check the vectorised pieces one by
one against the scalar code of :mod:`operators.twin`: contribution vectors to the bit, Redis twin
fields, the newest reading of a batch, and shard batches crossing a process boundary.
"""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np
from confluent_kafka import Message
from hypothesis import given, settings
from hypothesis import strategies as st

from operators.ancestry import Ancestry
from operators.records import Origin, ShardBatch
from operators.shard import Shard, ShardConfig
from operators.site_columns import STATUS_CODES, MinuteColumns, SiteColumns, contributions
from operators.twin import DELAYED, OFFLINE, ONLINE, UNKNOWN, Reading, SiteTwin, contribution
from operators.windows import MinuteWindow
from schemas.times import from_epoch_ms

NOW = 1_790_000_000_000


def _ancestry(site_id: str, capacity: float = 13.5, reserve: float = 20.0,
              max_kw: float = 5.0) -> dict[str, Any]:
    at = from_epoch_ms(NOW - 3_600_000)
    return {"site_id": site_id, "version": 1, "event_time": at, "effective_from": at, "retired": False,
            "capacity_kwh": capacity, "max_charge_kw": max_kw, "max_discharge_kw": max_kw,
            "reserve_pct": reserve, "region": "region-0",
            "paths": [{"hierarchy": "electrical", "node_ids": ["feeder-1", "region-0"], "valid_from": at,
                       "valid_to": None}]}


finite = st.floats(min_value=-1e4, max_value=1e4, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(st.tuples(st.floats(0.0, 100.0), finite, st.floats(0.0, 1e4), st.floats(0.0, 1e4),
                               finite, st.floats(0.0, 1e3), st.floats(0.0, 100.0), st.floats(0.0, 1e3),
                               st.sampled_from([UNKNOWN, ONLINE, DELAYED, OFFLINE]), st.booleans()),
                     min_size=1, max_size=20))
def test_vectorised_contributions_are_the_scalar_ones_to_the_bit(rows: list[tuple[Any, ...]]) -> None:
    table = SiteColumns(capacity=2)
    expected = []
    for i, (soc, battery, solar, load, grid, capacity, reserve, max_kw, status, heard) in enumerate(rows):
        row = table.row(f"site-{i}")
        ancestry = Ancestry.from_record(_ancestry(f"site-{i}", capacity, reserve, max_kw))
        table.set_ancestry(row, ancestry)
        reading = Reading(NOW, 1, soc, battery, solar, load, grid, None, "IDLE", None) if heard else None
        if reading is not None:
            table.event_ms[row] = NOW
            table.soc[row], table.battery[row], table.solar[row] = soc, battery, solar
            table.load[row], table.grid[row] = load, grid
        expected.append(contribution(reading, status, ancestry))
    statuses = np.array([STATUS_CODES[r[8]] for r in rows], dtype=np.int8)
    counted = np.ones(len(rows), dtype=np.bool_)
    got = contributions(table, np.arange(len(rows)), statuses, counted)
    assert [tuple(v) for v in got.tolist()] == expected


def _config() -> ShardConfig:
    return ShardConfig(delayed_after_ms=5_000, offline_after_ms=60_000, lateness_ms=30_000,
                       expected_samples_per_minute=60.0, node_groups=2)


def test_twin_writes_from_the_columns_are_the_site_twin_fields() -> None:
    shard = Shard(0, _config())
    shard.apply([], [_ancestry("site-a"), _ancestry("site-b")], wall_ms=NOW)
    shard.apply([("site-a", Reading(NOW - 500, 7, 61.5, -2.25, 1.5, 0.75, 0.0, 24.5, "CHARGE", "cmd-1")),
                 ("site-c", Reading(NOW - 400, 3, 40.0, 1.0, 0.0, 0.5, 0.5, None, "IDLE", None))], [],
                wall_ms=NOW, source="p0")
    out = shard.tick(NOW)
    assert set(out.twins) == {"site-a", "site-b", "site-c"}
    for site_id, (version, fields) in out.twins.items():
        twin = shard.twin(site_id)
        assert twin is not None
        assert version == twin.version()
        assert fields == twin.redis_fields(shard.clock.now_ms, with_limits=site_id != "site-c")
    assert out.twins["site-a"][1]["active_command_id"] == "cmd-1"
    assert out.twins["site-c"][1]["battery_temp_c"] == ""
    assert shard.tick(NOW).twins == {}, "a twin is written again only when it changes"


def test_the_newest_reading_of_a_batch_wins_and_an_equal_one_does_not_replace_it() -> None:
    shard = Shard(0, _config())
    first = Reading(NOW - 1_000, 5, 50.0, 1.0, 0.0, 0.0, 0.0, None, "A", None)
    same_key = Reading(NOW - 1_000, 5, 50.0, 2.0, 0.0, 0.0, 0.0, None, "B", None)
    older = Reading(NOW - 2_000, 9, 50.0, 3.0, 0.0, 0.0, 0.0, None, "C", None)
    shard.apply([("site-a", first), ("site-a", same_key), ("site-a", older)], [], wall_ms=NOW)
    twin = shard.twin("site-a")
    assert twin is not None and twin.reading == first, "newest by event time, then seq; the first of equals"
    shard.apply([("site-a", same_key)], [], wall_ms=NOW)
    twin = shard.twin("site-a")
    assert twin is not None and twin.reading == first, "a re-delivered equal reading is no news"


def test_a_shard_pickled_whole_or_as_state_gives_the_same_sites() -> None:
    shard = Shard(0, _config())
    shard.apply([], [_ancestry(f"site-{i}") for i in range(100)], wall_ms=NOW)  # grows past 64 rows
    shard.apply([(f"site-{i}", Reading(NOW - 900, 1, 50.0 + i / 10, 0.5, 0.0, 0.0, 0.0, 20.0, "IDLE", None))
                 for i in range(0, 100, 3)], [], wall_ms=NOW)
    shard.tick(NOW)
    restored = Shard.from_state(pickle.loads(pickle.dumps(shard.state())), _config(), NOW)
    assert restored.sites == shard.sites
    assert isinstance(shard.sites["site-3"], SiteTwin)


def test_a_snapshot_pickles_the_ancestries_again_only_when_they_changed() -> None:
    """Ancestries are most of a snapshot's pickling and seldom change: snapshots share one pickled
    copy until an ancestry is set or a site added, and every snapshot loads the ancestries it was
    taken with (as the object column older snapshots hold, so older code reads it too)."""
    shard = Shard(0, _config())
    shard.apply([], [_ancestry(f"site-{i}") for i in range(3)], wall_ms=NOW)
    first, again = shard.state(), shard.state()
    assert first.columns["ancestry"] is again.columns["ancestry"], "nothing changed: pickled once"

    moved = {**_ancestry("site-1", capacity=20.0), "version": 2}
    shard.apply([], [moved], wall_ms=NOW)  # merged into the object the first snapshot pickled
    after_merge = shard.state()
    shard.apply([("site-new", Reading(NOW - 900, 1, 50.0, 0.5, 0.0, 0.0, 0.0, 20.0, "IDLE", None))], [],
                wall_ms=NOW)
    after_new_row = shard.state()

    def loaded(state: object) -> list[Ancestry | None]:
        column = pickle.loads(pickle.dumps(state)).columns["ancestry"]
        assert isinstance(column, np.ndarray) and column.dtype == object
        return list(column)

    assert [a.capacity_kwh for a in loaded(first) if a is not None] == [13.5, 13.5, 13.5]
    assert [a.capacity_kwh for a in loaded(after_merge) if a is not None] == [13.5, 20.0, 13.5]
    assert len(loaded(after_new_row)) == 4 and loaded(after_new_row)[3] is None
    restored = Shard.from_state(pickle.loads(pickle.dumps(after_new_row)), _config(), NOW)
    assert restored.sites == shard.sites


def test_a_batch_pickled_to_another_process_carries_origins_not_messages() -> None:
    message = Message(topic="telemetry.raw", partition=2, offset=41, key=b"site-a", value=b"\x00avro",
                      timestamp=(1, 1_790_000_000_000))
    unkeyed = Message(topic="telemetry.raw", partition=2, offset=42, key=None, value=b"\x01",
                      timestamp=(0, 0))
    batch = ShardBatch(3, "telemetry.raw/2", NOW, [], [message, unkeyed, message])
    copy = pickle.loads(pickle.dumps(batch))
    origin = Origin(b"site-a", b"\x00avro", "telemetry.raw", 2, 41, 1_790_000_000_000)
    origins = [origin, Origin(None, b"\x01", "telemetry.raw", 2, 42, None), origin]
    assert [copy.origin(i) for i in range(3)] == [batch.origin(i) for i in range(3)] == origins
    assert pickle.loads(pickle.dumps(copy)).origin(2) == origin
    assert (copy.shard, copy.source, copy.source_max_ms) == (3, "telemetry.raw/2", NOW)


# Sequence numbers: mostly close together (the word columns), some far apart or below the first one
# (moved to the dict of wide rows), with re-deliveries.
_numbers = st.one_of(st.integers(0, 70), st.integers(0, 9000))


@settings(max_examples=150, deadline=None)
@given(batches=st.lists(st.lists(st.tuples(st.integers(0, 5), _numbers), max_size=30), min_size=1,
                        max_size=5),
       restore=st.booleans())
def test_minute_columns_count_re_deliveries_as_a_window_per_site_does(
        batches: list[list[tuple[int, int]]], restore: bool) -> None:
    """Batch by batch, the readings MinuteColumns counts and the windows it gives are those of a
    MinuteWindow per site reading one by one (its sequence-number bits included), across a snapshot."""
    columns = MinuteColumns(8)
    windows: dict[int, MinuteWindow] = {}
    for n, batch in enumerate(batches):
        if not batch:
            continue
        rows = np.array([row for row, _ in batch], dtype=np.int64)
        seqs = np.array([seq for _, seq in batch], dtype=np.int64)
        event = NOW + np.arange(len(batch), dtype=np.int64)
        values = {name: np.arange(len(batch), dtype=np.float64) + n for name in
                  ("battery", "solar", "load", "grid", "soc")}
        columns.add(rows, seqs, event, values)
        for i, (row, seq) in enumerate(batch):
            value = float(i + n)
            windows.setdefault(row, MinuteWindow()).add(
                Reading(int(event[i]), seq, value, value, value, value, value, None, "", None))
        if restore:
            columns = MinuteColumns.from_state(8, columns.state(8))
    for row in range(8):
        assert columns.window(row) == windows.get(row)
