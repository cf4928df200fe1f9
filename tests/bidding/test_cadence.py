"""The scheduler's slots: one run per slot, the same run for the same slot, rebids counted from 0."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from bidding.cadence import slot_run

T0 = datetime(2026, 12, 1, tzinfo=UTC)
FIVE = timedelta(minutes=5)
HOUR = timedelta(hours=1)
LEAD = timedelta(seconds=370)


def test_five_minute_slots_bid_the_hourly_interval_twelve_times_numbered_from_zero() -> None:
    runs = [slot_run(T0 + k * FIVE, FIVE, HOUR, LEAD) for k in range(36)]
    by_interval: dict[datetime, list[int]] = {}
    for run in runs:
        by_interval.setdefault(run.interval_start, []).append(run.rebid)
    full = [rebids for rebids in by_interval.values() if len(rebids) == 12]
    assert full and all(rebids == list(range(12)) for rebids in full)
    assert all(r.interval_start - r.slot_start >= LEAD for r in runs)


def test_a_five_minute_market_gets_one_run_per_interval() -> None:
    runs = [slot_run(T0 + k * FIVE, FIVE, FIVE, LEAD) for k in range(24)]
    assert all(r.rebid == 0 for r in runs)
    assert len({r.interval_start for r in runs}) == 24


@given(offset_s=st.floats(min_value=0, max_value=10 * 86400, allow_nan=False),
       step_min=st.sampled_from([5, 15, 30, 60]), lead_s=st.integers(min_value=0, max_value=3600))
def test_every_moment_of_a_slot_asks_for_the_same_run_whose_gate_is_open(
        offset_s: float, step_min: int, lead_s: int) -> None:
    step, lead = timedelta(minutes=step_min), timedelta(seconds=lead_s)
    now = T0 + timedelta(seconds=offset_s)
    run = slot_run(now, FIVE, step, lead)
    assert run.slot_start <= now < run.slot_start + FIVE
    assert slot_run(run.slot_start, FIVE, step, lead) == run
    assert slot_run(run.slot_start + FIVE / 2, FIVE, step, lead) == run
    assert run.interval_start - run.slot_start >= lead and run.rebid >= 0
    assert run.interval_start - step - lead < run.slot_start  # the first interval that is open
    nxt = slot_run(run.slot_start + FIVE, FIVE, step, lead)
    assert (nxt.interval_start, nxt.rebid) != (run.interval_start, run.rebid)
    if nxt.interval_start == run.interval_start:
        assert nxt.rebid == run.rebid + 1
