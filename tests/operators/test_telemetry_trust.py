"""What a device may not do to the telemetry state: implausible readings, a poisoning clock, drifting sums.

Issue 20, cases 2-5, at the level of the pure state (shards, node groups, the shard clock) and the
decode step; tests/integration/test_telemetry_trust.py runs the same faults through the real stack.
"""

from __future__ import annotations

import dataclasses
import math
import pickle
from dataclasses import dataclass
from typing import Any, cast

import pytest
from confluent_kafka import Message

from core.plausibility import (
    BEYOND_RATING,
    FUTURE_EVENT_TIME,
    NOT_A_NUMBER,
    OUT_OF_RANGE,
    STALE_EVENT_TIME,
    Rules,
)
from core.topics import TELEMETRY_RAW
from operators.clock import EventClock
from operators.kafka_batches import Polled
from operators.records import DLQ_KEY, REJECTED, KafkaOut, ShardBatch, codec, route
from operators.rollup import NodeGroup
from operators.shard import Shard, ShardConfig, ShardOutput
from operators.twin import OFFLINE, ONLINE, Reading
from schemas.times import from_epoch_ms, wall_ms

YEAR_MS = 365 * 24 * 3_600_000
RULES = Rules()
NOW = 1_790_000_000_000 - 1_790_000_000_000 % 60_000


def _config(rules: Rules | None = RULES) -> ShardConfig:
    return ShardConfig(delayed_after_ms=5_000, offline_after_ms=60_000, lateness_ms=30_000,
                       expected_samples_per_minute=60.0, node_groups=1, rules=rules)


def _ancestry(site_id: str, feeder: str = "feeder-1", max_kw: float = 5.0) -> dict[str, Any]:
    at = from_epoch_ms(NOW - 3_600_000)
    return {"site_id": site_id, "version": 1, "event_time": at, "effective_from": at, "retired": False,
            "capacity_kwh": 10.0, "max_charge_kw": max_kw, "max_discharge_kw": max_kw, "reserve_pct": 20.0,
            "region": "region-0",
            "paths": [{"hierarchy": "electrical", "node_ids": [feeder, "region-0"], "valid_from": at,
                       "valid_to": None}]}


def _reading(event_ms: int, seq: int, battery_kw: float = 1.0) -> Reading:
    return Reading(event_ms, seq, 50.0, battery_kw, 0.5, 0.5, 0.0, 25.0, "SELF_CONSUMPTION", None)


class Fleet:
    """A shard and its node group, driven the way the dataflow drives them."""

    def __init__(self, rules: Rules | None = RULES, sites: tuple[str, ...] = ("site-a", "site-b")) -> None:
        self.shard = Shard(0, _config(rules))
        self.group = NodeGroup(retention_ms=3_600_000)
        self.nodes: dict[str, dict[str, Any]] = {}
        self.deliver(self.shard.apply([], [_ancestry(s) for s in sites], wall_ms=NOW))

    def deliver(self, out: ShardOutput) -> ShardOutput:
        for changes in out.groups.values():
            self.group.apply(changes)
        return out

    def feed(self, readings: list[tuple[str, Reading]], wall: int = NOW) -> ShardOutput:
        out = self.deliver(self.shard.apply(readings, [], wall_ms=wall, source="p0"))
        tick = self.deliver(self.shard.tick(wall))
        for record in self.group.emit(wall).aggregates:
            self.nodes[record["node_id"]] = record
        out.statuses += tick.statuses
        out.site_rows += tick.site_rows
        return out


# ---- case 3: event time a device cannot poison ---------------------------------------------------


def test_the_clock_never_runs_ahead_of_the_wall_clock_by_more_than_the_skew() -> None:
    clock = EventClock(idle_ms=1_000, max_ahead_ms=10_000)
    clock.observe("p0", NOW + YEAR_MS, wall_ms=NOW)
    assert clock.advance(NOW) == NOW + 10_000, "active: the partition's newest time counts up to the bound"
    assert clock.advance(NOW + 60_000) == NOW + 70_000, "quiet: runs on with wall time, still bounded"
    assert clock.newest_ms <= NOW + 10_000


def test_a_restored_clock_beyond_the_bound_is_clamped() -> None:
    clock = EventClock(idle_ms=1_000)  # as the old code kept it: no bound
    clock.observe("p0", NOW + YEAR_MS, wall_ms=NOW)
    clock.advance(NOW)
    restored = pickle.loads(pickle.dumps(clock))
    restored.max_ahead_ms = 10_000
    assert restored.clamp(NOW)
    assert restored.now_ms == NOW, "a time beyond the bound says nothing: the wall clock is the estimate"
    assert NOW <= restored.advance(NOW + 1_000) <= NOW + 11_000
    assert not restored.clamp(NOW + 1_000), "a clock within the bound is kept"


def test_a_reading_dated_a_year_ahead_is_refused_and_moves_nothing() -> None:
    fleet = Fleet()
    fleet.feed([("site-a", _reading(NOW - 1_000, 1)), ("site-b", _reading(NOW - 1_000, 1))])
    out = fleet.feed([("site-a", _reading(NOW + YEAR_MS, 2, battery_kw=4.0))])
    assert [(i, v.reason) for i, v in out.rejected] == [(0, FUTURE_EVENT_TIME)]
    assert fleet.shard.clock.now_ms <= NOW + RULES.max_ahead_ms
    assert fleet.shard.sites["site-a"].last_seen_ms == NOW - 1_000
    assert not any(m > NOW for m in fleet.shard.sites["site-a"].windows)

    # Current readings keep being accepted, the twin follows them, and minutes keep closing.
    later = NOW + 120_000
    out = fleet.feed([("site-a", _reading(later, 3, battery_kw=2.0)), ("site-b", _reading(later, 3))],
                     wall=later)
    assert out.rejected == []
    assert fleet.shard.sites["site-a"].reading == _reading(later, 3, battery_kw=2.0)
    assert {t.status for t in fleet.shard.sites.values()} == {ONLINE}
    assert {row.site_id for row in out.site_rows} == {"site-a", "site-b"}
    assert fleet.nodes["region-0"]["battery_kw"] == 3.0


def test_a_reading_from_1971_does_not_replace_the_current_one() -> None:
    fleet = Fleet()
    fleet.feed([("site-a", _reading(NOW - 1_000, 1))])
    fleet.feed([("site-a", _reading(31_536_000_000, 99))])
    assert fleet.shard.sites["site-a"].last_seen_ms == NOW - 1_000


def _poisoned_snapshot() -> tuple[Fleet, bytes, bytes]:
    """State as the code before bounded event time left it: one reading a year ahead took the clock."""
    old = Fleet(rules=None)
    old.feed([("site-a", _reading(NOW - 1_000, 1)), ("site-b", _reading(NOW - 1_000, 1))])
    old.feed([("site-a", _reading(NOW + YEAR_MS, 2, battery_kw=4.0))])
    old.feed([], wall=NOW + 20_000)  # a quiet spell: the clock follows the newest device time
    assert old.shard.clock.now_ms >= NOW + YEAR_MS
    assert old.shard.sites["site-b"].status == OFFLINE
    return old, pickle.dumps(old.shard), pickle.dumps(old.group)


def test_a_poisoned_snapshot_is_repaired_on_restore_and_sites_come_back_online() -> None:
    _, shard_bytes, group_bytes = _poisoned_snapshot()
    fleet = Fleet()
    fleet.shard, fleet.group = pickle.loads(shard_bytes), pickle.loads(group_bytes)
    wall = NOW + 30_000
    fleet.shard.restored(_config(), wall)
    fleet.group.restored(wall, RULES.max_ahead_ms)
    assert fleet.shard.clock.now_ms <= wall + RULES.max_ahead_ms
    assert fleet.shard.sites["site-a"].reading is None, "the reading from the future is dropped"
    assert fleet.group.clock_ms <= wall + RULES.max_ahead_ms

    out = fleet.feed([("site-a", _reading(wall, 3, battery_kw=2.0)), ("site-b", _reading(wall, 3))],
                     wall=wall)
    assert out.rejected == []
    assert {t.status for t in fleet.shard.sites.values()} == {ONLINE}
    assert fleet.nodes["region-0"]["reporting_sites"] == 2
    assert fleet.nodes["region-0"]["battery_kw"] == 3.0
    assert fleet.nodes["region-0"]["event_time"] <= from_epoch_ms(wall + RULES.max_ahead_ms)
    later = wall + 120_000
    out = fleet.feed([("site-a", _reading(later, 4)), ("site-b", _reading(later, 4))], wall=later)
    assert {row.site_id for row in out.site_rows} == {"site-a", "site-b"}, "minutes are written again"


# ---- case 2: plausibility in the shard (the site's rating) --------------------------------------


def test_a_reading_beyond_the_sites_registered_rating_is_refused() -> None:
    fleet = Fleet()
    fleet.feed([("site-a", _reading(NOW - 2_000, 1, battery_kw=1.0))])
    out = fleet.feed([("site-a", _reading(NOW - 1_000, 2, battery_kw=50.0)),
                      ("site-b", _reading(NOW - 1_000, 2, battery_kw=-6.25))])  # exactly 1.25 x 5 kW
    assert [(i, v.reason) for i, v in out.rejected] == [(0, BEYOND_RATING)]
    assert "5.0 kW" in out.rejected[0][1].detail
    assert fleet.nodes["region-0"]["battery_kw"] == 1.0 - 6.25


# ---- case 4: exact sums ------------------------------------------------------------------------


def test_a_huge_reading_is_refused_and_a_large_one_then_zero_loses_no_small_term() -> None:
    fleet = Fleet()
    fleet.feed([("site-b", _reading(NOW - 4_000, 1, battery_kw=1e-9))])
    out = fleet.feed([("site-a", _reading(NOW - 3_000, 1, battery_kw=1e300))])
    assert [v.reason for _, v in out.rejected] == [OUT_OF_RANGE]
    # The old float sums: 1e-9 + 6.25 - 6.25 = 1.000000082740371e-09, for good.
    fleet.feed([("site-a", _reading(NOW - 2_000, 2, battery_kw=6.25))])
    fleet.feed([("site-a", _reading(NOW - 1_000, 3, battery_kw=0.0))])
    assert fleet.nodes["region-0"]["battery_kw"] == 1e-9
    assert fleet.nodes["feeder-1"]["est_battery_kw"] == 1e-9


def _as_old_snapshot(fleet: Fleet) -> tuple[bytes, bytes]:
    """The same state pickled as the code before exact rollups had it: float vectors, drifted sums."""
    group = pickle.loads(pickle.dumps(fleet.group))
    twins = fleet.shard.sites
    for twin in twins.values():
        twin.sent_vector = cast(tuple[int, ...], tuple(float(x) for x in twin.sent_vector))  # as v1 held it
    # An object per site and no version attribute (a NodeGroup pickled whole has none either: version 1).
    shard = object.__new__(Shard)
    shard.__dict__.update(shard=0, config=fleet.shard.config, sites=twins, clock=fleet.shard.clock,
                          closed_before_ms=fleet.shard.closed_before_ms,
                          first_minute_ms=fleet.shard.first_minute_ms, _changed=set(), _dirty_twins=set(),
                          _new_limits=set())
    for node in group.nodes.values():
        node.total = [float("nan")] + [x + 0.37 for x in node.total[1:]]  # drifted beyond repair
    return pickle.dumps(shard), pickle.dumps(group)


def test_an_old_float_snapshot_is_rebuilt_from_the_sites_contributions() -> None:
    fleet = Fleet()
    fleet.feed([("site-a", _reading(NOW - 1_000, 1, battery_kw=0.1)),
                ("site-b", _reading(NOW - 1_000, 1, battery_kw=0.2))])
    shard_bytes, group_bytes = _as_old_snapshot(fleet)
    fleet.shard = pickle.loads(shard_bytes)
    fleet.group = NodeGroup.from_state(NodeGroup.migrate(pickle.loads(group_bytes)), fleet.group.retention_ms)
    fleet.shard.restored(_config(), NOW)
    fleet.group.restored(NOW, RULES.max_ahead_ms)
    fleet.feed([], wall=NOW)
    region = fleet.nodes["region-0"]
    assert (region["battery_kw"], region["expected_sites"], region["reporting_sites"]) == (0.3, 2, 2)
    assert math.isclose(region["energy_available_kwh"], 2 * 10.0 * 0.3)


def test_a_snapshot_from_newer_code_fails_loudly() -> None:
    shard = Shard(0, _config())
    shard.state_version = 99
    with pytest.raises(RuntimeError, match="state version 99"):
        pickle.loads(pickle.dumps(shard)).restored(_config(), NOW)
    state = dataclasses.replace(NodeGroup(retention_ms=1).state(), version=99)
    with pytest.raises(RuntimeError, match="state version 99"):
        NodeGroup.from_state(pickle.loads(pickle.dumps(state)), 1)


# ---- cases 2, 3, 5 at the decode step ------------------------------------------------------------


@dataclass
class FakeMessage:
    """What confluent-kafka's Message answers, for the decode step (which only reads these)."""

    _key: bytes | None
    _value: bytes
    _offset: int

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return TELEMETRY_RAW

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes:
        return self._value

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def timestamp(self) -> tuple[int, int]:
        return (0, 0)


def _telemetry(event_ms: int, **fields: Any) -> dict[str, Any]:
    return {"site_id": "site-a", "seq": 1, "event_time": from_epoch_ms(event_ms), "received_time": None,
            "soc_pct": 50.0, "battery_kw": 1.0, "solar_kw": 0.5, "load_kw": 0.5, "grid_kw": 0.0,
            "battery_temp_c": 25.0, "mode": "SELF_CONSUMPTION", "active_command_id": None, "firmware": "1.0",
            **fields}


def test_the_decode_step_dead_letters_implausible_readings_with_the_reason_and_counts_them() -> None:
    now = wall_ms()
    records = {
        "good": _telemetry(now - 1_000),
        "huge": _telemetry(now - 1_000, battery_kw=1e12),
        "negative": _telemetry(now - 1_000, grid_kw=-1e12),
        "nan": _telemetry(now - 1_000, battery_kw=float("nan")),
        "future": _telemetry(now + YEAR_MS),
        "1971": _telemetry(31_536_000_000),
    }
    want = {"huge": OUT_OF_RANGE, "negative": OUT_OF_RANGE, "nan": NOT_A_NUMBER, "future": FUTURE_EVENT_TIME,
            "1971": STALE_EVENT_TIME}
    values = {name: codec().encode("SiteTelemetry", r) for name, r in records.items()}
    messages = [FakeMessage(b"site-a", v, offset) for offset, v in enumerate(values.values())]
    before = {r: REJECTED.labels(r)._value.get() for r in set(want.values())}

    out = route([Polled(TELEMETRY_RAW, 0, cast(list[Message], messages))], shards=1, rules=RULES)

    dead = [cast(KafkaOut, m).value or b"" for key, m in out if key == DLQ_KEY]
    letters = [codec().decode(value, "DeadLetter") for value in dead]
    by_value = {bytes(d["original_value"]): d for d in letters}
    assert set(by_value) == {values[name] for name in want}
    for name, reason in want.items():
        letter = by_value[values[name]]
        assert letter["error_kind"] == reason and letter["error"], name
        assert letter["topic"] == TELEMETRY_RAW and letter["offset"] == list(records).index(name)
    batches = [b for key, b in out if key != DLQ_KEY]
    assert len(batches) == 1 and isinstance(batches[0], ShardBatch)
    assert [site for site, _ in batches[0].readings] == ["site-a"]
    assert batches[0].origin(0).value == values["good"]
    assert batches[0].source_max_ms == now - 1_000, "a refused reading moves no clock"
    after = {r: REJECTED.labels(r)._value.get() for r in before}
    assert {r: after[r] - before[r] for r in before} == {OUT_OF_RANGE: 2, NOT_A_NUMBER: 1,
                                                          FUTURE_EVENT_TIME: 1, STALE_EVENT_TIME: 1}
