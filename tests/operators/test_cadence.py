"""A shard ticks twice per emission interval live, and less often while it drains a backlog."""

from __future__ import annotations

import time
from datetime import timedelta

from core.config import Settings
from operators.shard import Shard
from operators.telemetry_steps import Cadence, ShardLogic, shard_config


def _logic(clock_lag_s: float | None) -> ShardLogic:
    settings = Settings(emit_interval_s=1.0, catch_up_after_s=10.0, catch_up_tick_s=5.0,
                        topic_partitions={"telemetry.raw": 1})
    shard = Shard(0, shard_config(settings))
    if clock_lag_s is not None:
        wall = time.time_ns() // 1_000_000
        shard.clock.observe("telemetry.raw/0", wall - int(clock_lag_s * 1000), wall)
        shard.clock.advance(wall)
    return ShardLogic(shard, Cadence.from_settings(settings))


def test_live_a_shard_ticks_at_a_quarter_of_the_emission_interval() -> None:
    logic = _logic(clock_lag_s=1.0)
    assert not logic.catching_up()
    assert logic.notify_at() - logic.last_tick == timedelta(seconds=0.25)


def test_behind_by_more_than_the_threshold_it_ticks_at_the_catch_up_cadence() -> None:
    logic = _logic(clock_lag_s=60.0)
    assert logic.catching_up()
    assert logic.notify_at() - logic.last_tick == timedelta(seconds=5)


def test_before_any_reading_it_is_not_catching_up() -> None:
    assert not _logic(clock_lag_s=None).catching_up()
