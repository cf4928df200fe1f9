"""The shard clock: a watermark over input partitions that never runs ahead of a lagging one."""

from __future__ import annotations

import pickle

from hypothesis import given
from hypothesis import strategies as st

from operators.clock import EventClock


def test_the_clock_is_the_oldest_of_the_partitions_newest_times() -> None:
    clock = EventClock(idle_ms=10_000)
    clock.observe("p0", 50_000, wall_ms=0)
    clock.observe("p1", 20_000, wall_ms=0)
    assert clock.advance(wall_ms=100) == 20_000
    clock.observe("p1", 60_000, wall_ms=200)
    assert clock.advance(wall_ms=200) == 50_000


def test_a_silent_partition_stops_holding_the_clock_back() -> None:
    clock = EventClock(idle_ms=10_000)
    clock.observe("p0", 20_000, wall_ms=0)
    clock.observe("p1", 90_000, wall_ms=0)
    clock.observe("p1", 95_000, wall_ms=11_000)
    assert clock.advance(wall_ms=11_000) == 95_000


def test_with_all_input_quiet_the_clock_runs_on_with_wall_time() -> None:
    clock = EventClock(idle_ms=1_000)
    clock.observe("p0", 20_000, wall_ms=0)
    assert clock.advance(wall_ms=5_000) == 25_000


def test_an_expected_partition_not_heard_from_holds_the_start() -> None:
    clock = EventClock(idle_ms=10_000, expected=["p0", "p1"])
    clock.observe("p0", 80_000, wall_ms=0)
    assert clock.advance(wall_ms=1_000) == 0
    clock.observe("p0", 90_000, wall_ms=11_000)
    assert clock.advance(wall_ms=11_500) == 90_000, "p1 is given up on after idle_ms"


@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(0, 10**6), st.integers(0, 10**4)),
                max_size=60))
def test_the_clock_never_goes_backwards(events: list[tuple[str, int, int]]) -> None:
    clock = EventClock(idle_ms=2_000)
    wall = 0
    last = 0
    for partition, event_ms, wall_step in events:
        wall += wall_step
        clock.observe(partition, event_ms, wall)
        now = clock.advance(wall)
        assert now >= last
        last = now


def test_a_stall_of_the_shard_does_not_count_as_silence_of_its_partitions() -> None:
    """Seen on a loaded machine: a worker that got no CPU for over 10 s gave up on every partition and
    ran the clock past readings still in the backlog, which then came out late."""
    clock = EventClock(idle_ms=10_000, stall_ms=2_000)
    clock.observe("p0", 50_000, wall_ms=0)
    clock.observe("p1", 20_000, wall_ms=0)
    assert clock.advance(wall_ms=15_000) == 20_000, "one 15 s gap counts as 2 s: p1 still holds the clock"
    clock.observe("p0", 60_000, wall_ms=15_000)
    for wall in range(16_000, 23_000, 1_000):  # the shard runs again, turning every second
        assert clock.advance(wall_ms=wall) == 20_000
    assert clock.advance(wall_ms=23_000) == 60_000, "2 s of the stall + 8 s of turns: p1 is given up on"


def test_with_all_input_quiet_a_stall_moves_the_clock_only_by_the_cap() -> None:
    clock = EventClock(idle_ms=1_000, stall_ms=2_000)
    clock.observe("p0", 20_000, wall_ms=0)
    assert clock.advance(wall_ms=30_000) == 22_000
    assert clock.advance(wall_ms=31_000) == 23_000, "then with wall time again"


def test_silence_counts_from_the_first_input_on() -> None:
    clock = EventClock(idle_ms=1_000, expected=["p0"], stall_ms=2_000)
    assert clock.advance(wall_ms=0) == 0
    assert clock.advance(wall_ms=1_500) == 0, "nothing heard yet: the clock has nothing to run on from"


def test_a_clock_pickled_before_silence_was_counted_per_turn_loads() -> None:
    old = EventClock.__new__(EventClock)
    old.__dict__.update(idle_ms=1_000, max_ahead_ms=None, partition_max={"p0": 20_000}, now_ms=20_000,
                        _heard_at={}, _last_input_wall=None)
    restored = pickle.loads(pickle.dumps(old))
    assert restored.stall_ms is None
    assert restored.advance(wall_ms=5_000) == 20_000, "after a restore every partition counts as just heard"
    assert restored.advance(wall_ms=6_500) == 20_000, "nor does it run on before new input, as before"
    restored.observe("p0", 25_000, wall_ms=7_000)
    assert restored.advance(wall_ms=8_500) == 26_500
