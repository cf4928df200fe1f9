"""The shard clock: a watermark over input partitions that never runs ahead of a lagging one."""

from __future__ import annotations

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
