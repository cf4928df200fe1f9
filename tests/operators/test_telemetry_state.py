"""The telemetry state (twins, shards, node groups) against a brute-force reading of the same input."""

from __future__ import annotations

import pickle
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from operators.ancestry import Ancestry
from operators.shard import Shard
from operators.twin import DELAYED, OFFLINE, ONLINE, UNKNOWN, Reading, status_at
from operators.windows import MinuteWindow
from schemas.times import from_epoch_ms
from tests.telemetry import drive
from tests.telemetry.compare import check_all
from tests.telemetry.scenario import generate


def _reading(event_ms: int, seq: int, battery_kw: float = 1.0) -> Reading:
    return Reading(event_ms, seq, 50.0, battery_kw, 0.0, 0.5, 0.0, None, "IDLE", None)


def test_the_reference_scenario_matches_brute_force() -> None:
    scenario = generate()
    results = drive.run(scenario)
    assert check_all(scenario, results.nodes, results.site_rows, results.node_rows, scenario.end_ms) == []
    assert results.late_readings == len(scenario.too_late)
    assert results.rejected == 0, "nothing a real fleet says is refused"


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), shards=st.integers(1, 12), groups=st.integers(1, 6),
       batch=st.integers(20, 5_000))
def test_any_sharding_and_batching_gives_the_brute_force_answer(seed: int, shards: int, groups: int,
                                                                batch: int) -> None:
    scenario = generate(n_sites=40, minutes=4.25, seed=seed)
    results = drive.run(scenario, shards=shards, node_groups=groups, batch=batch)
    assert check_all(scenario, results.nodes, results.site_rows, results.node_rows, scenario.end_ms) == []


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), late_share=st.sampled_from([0.3, 1.0]), late_minutes=st.integers(1, 3))
def test_sites_whose_ancestry_comes_after_minutes_closed_are_in_those_node_minutes(
        seed: int, late_share: float, late_minutes: int) -> None:
    """A process that read its ``assets.changes`` partition late once left a third of the sites out
    of the first node minutes (county-0: 64 of 98 sites, a two-process replay on a loaded machine)."""
    scenario = generate(n_sites=40, minutes=4.25, seed=seed)
    sites = sorted(a["site_id"] for a in scenario.ancestries)
    late = set(sites[:: round(1 / late_share)])
    after_ms = scenario.start_ms + late_minutes * 60_000
    results = drive.run(scenario, late_ancestries=late, late_after_ms=after_ms)
    assert check_all(scenario, results.nodes, results.site_rows, results.node_rows, scenario.end_ms) == []


def test_the_windows_kept_for_a_site_in_no_node_survive_a_snapshot() -> None:
    scenario = generate(n_sites=5, minutes=3.5, seed=3)
    config = replace(drive.config_for(scenario, node_groups=1), backfill_horizon_ms=drive.BACKFILL_HORIZON_MS)
    wall = drive.wall_of(scenario)
    shard = Shard(0, config)
    shard.apply([(r["site_id"], Reading.from_record(r)) for r in scenario.readings], [], wall_ms=wall)
    restored = Shard.from_state(pickle.loads(pickle.dumps(shard.state())), config, wall)
    kept = {site: sorted(windows) for site, windows in shard.unplaced.items()}
    # Two minutes closed; the third waits out the allowed lateness.
    assert len(kept) == 5 and all(len(minutes) == 2 for minutes in kept.values())
    assert {site: sorted(windows) for site, windows in restored.unplaced.items()} == kept
    out = restored.apply([], scenario.ancestries, wall_ms=wall)
    counted = {minute for changes in out.groups.values() for _, minute in changes.corrections}
    assert counted == set(next(iter(kept.values()))), "every kept minute goes to the nodes"
    assert not restored.unplaced


def test_a_shard_restored_from_a_snapshot_continues_exactly() -> None:
    scenario = generate(n_sites=60, minutes=3.5, seed=3)
    config = drive.config_for(scenario, node_groups=1)
    wall = drive.wall_of(scenario)
    uninterrupted, restored = Shard(0, config), Shard(0, config)
    uninterrupted.apply([], scenario.ancestries, wall_ms=wall)
    restored.apply([], scenario.ancestries, wall_ms=wall)
    readings = [(r["site_id"], Reading.from_record(r)) for r in scenario.readings]
    half = len(readings) // 2
    uninterrupted.apply(readings[:half], [], wall_ms=wall)
    restored.apply(readings[:half], [], wall_ms=wall)
    restored = pickle.loads(pickle.dumps(restored))
    restored.restored(config, wall)
    first = uninterrupted.apply(readings[half:], [], wall_ms=wall)
    second = restored.apply(readings[half:], [], wall_ms=wall)
    assert first.site_rows, "minutes closed after the restore"
    assert first.site_rows == second.site_rows
    assert {g: c.deltas for g, c in first.groups.items()} == {g: c.deltas for g, c in second.groups.items()}


def test_a_late_older_reading_never_replaces_a_newer_one() -> None:
    newer, older = _reading(10_000, 10, battery_kw=2.0), _reading(9_000, 9, battery_kw=-2.0)
    assert newer.is_newer_than(older)
    assert not older.is_newer_than(newer)
    assert not newer.is_newer_than(newer), "a re-delivered reading is not news"
    assert _reading(10_000, 11).is_newer_than(newer), "same event time: the sequence decides"


def test_status_follows_the_age_of_the_newest_reading() -> None:
    assert status_at(10_000, None, 5_000, 60_000) == UNKNOWN
    assert status_at(10_000, 6_000, 5_000, 60_000) == ONLINE
    assert status_at(10_000, 5_000, 5_000, 60_000) == DELAYED
    assert status_at(70_000, 10_000, 5_000, 60_000) == OFFLINE


def test_a_minute_window_counts_a_redelivered_reading_once() -> None:
    window = MinuteWindow()
    assert window.add(_reading(1_000, 5, battery_kw=1.0))
    assert window.add(_reading(2_000, 6, battery_kw=3.0))
    assert not window.add(_reading(1_000, 5, battery_kw=1.0))
    assert window.add(_reading(500, 4, battery_kw=2.0)), "an older sequence arriving late still counts"
    assert window.samples == 3
    assert window.battery_sum == 6.0
    assert (window.battery_min, window.battery_max) == (1.0, 3.0)


def _ancestry(version: int, effective_ms: int, feeder: str) -> dict[str, object]:
    at = from_epoch_ms(effective_ms)
    return {"site_id": "s", "version": version, "effective_from": at, "retired": False, "capacity_kwh": 10.0,
            "max_charge_kw": 5.0, "max_discharge_kw": 5.0, "reserve_pct": 20.0, "region": "r",
            "paths": [{"hierarchy": "electrical", "node_ids": [feeder, "sub"], "valid_from": at,
                       "valid_to": None}]}


def test_membership_follows_the_version_in_effect_at_each_time() -> None:
    ancestry = Ancestry.from_record(_ancestry(1, 1_000, "feeder-a"))
    assert ancestry.merge(_ancestry(3, 5_000, "feeder-b"))
    assert not ancestry.merge(_ancestry(2, 3_000, "feeder-c")), "an older version arriving late is ignored"
    assert ancestry.nodes_at(500) == ("feeder-a", "sub"), "before the first version: best knowledge"
    assert ancestry.nodes_at(4_999) == ("feeder-a", "sub")
    assert ancestry.nodes_at(5_000) == ("feeder-b", "sub")
    assert ancestry.next_change_after(1_000) == 5_000
