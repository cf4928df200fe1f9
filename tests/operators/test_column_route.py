"""The decode step routes a poll decoded as columns exactly as decoding it one message at a time would."""

from __future__ import annotations

import pickle
from typing import Any, cast

from confluent_kafka import Message
from hypothesis import example, given, settings
from hypothesis import strategies as st

from core.plausibility import Rules, check_telemetry
from core.topics import TELEMETRY_RAW
from operators.kafka_batches import Polled
from operators.records import DLQ_KEY, KafkaOut, Origin, OriginColumns, ShardBatch, codec, route
from operators.shard import bucket_of
from operators.twin import Reading
from schemas import DecodeError
from schemas.times import wall_ms

RULES = Rules()
SHARDS = 4


def _record(site: str, seq: int, offset_ms: int, **fields: Any) -> dict[str, Any]:
    return {"site_id": site, "seq": seq, "event_time": wall_ms() + offset_ms, "received_time": None,
            "soc_pct": 50.0, "battery_kw": 1.0, "solar_kw": 0.5, "load_kw": 0.7, "grid_kw": -0.2,
            "battery_temp_c": 25.0, "mode": "SELF_CONSUMPTION", "active_command_id": None, "firmware": "1.0",
            **fields}


_values = st.sampled_from([0.0, -0.0, 1.5, -4.0, 150.0, -1e9, float("nan"), float("inf"), 99.9, 100.0, 101.0])
_entries = st.tuples(
    st.sampled_from(["site-a", "site-b", "site-ü", "s" * 80, "site-c"]),  # unicode and long ids too
    st.integers(-1, 3), st.sampled_from([-5_000, -1_000, 0, 60_000, -400 * 3_600_000]),
    st.fixed_dictionaries({}, optional={
        "soc_pct": _values, "battery_kw": _values, "solar_kw": _values, "grid_kw": _values,
        "battery_temp_c": st.one_of(st.none(), _values), "active_command_id": st.sampled_from(["c-1", "ç"]),
        "firmware": st.sampled_from([None, "é", "x" * 200]), "mode": st.sampled_from(["IDLE", "FAULT"])}),
    st.sampled_from(["same", "same", "same", "none", "other", "truncate", "garbage", "tombstone"]))


def _message(offset: int, entry: tuple[str, int, int, dict[str, Any], str]) -> Message:
    site, seq, offset_ms, fields, how = entry
    value: bytes | None = codec().encode("SiteTelemetry", _record(site, seq, offset_ms, **fields))
    key: bytes | None = site.encode()
    if how == "none":
        key = None
    elif how == "other":
        key = b"site-z"
    elif how == "truncate":
        value = (value or b"")[:-3]
    elif how == "garbage":
        value = b"\x00\x01\x02\x03\x04\x05"
    elif how == "tombstone":
        value = None
    return Message(topic=TELEMETRY_RAW, partition=1, offset=offset, key=key, value=value, timestamp=(1, 0))


Routed = tuple[list[tuple[str, str]], dict[int, list[tuple[str, str, int]]]]


def _one_at_a_time(messages: list[Message]) -> Routed:
    """The decode step as it was: each message decoded, its key and plausibility checked, on its own."""
    letters: list[tuple[str, str]] = []
    shards: dict[int, list[tuple[str, str, int]]] = {}
    for msg in messages:
        value = msg.value()
        if value is None:
            continue
        try:
            record = codec().decode_millis(value, "SiteTelemetry")
        except DecodeError as exc:
            letters.append((exc.reason.value, repr(value)))
            continue
        key = msg.key()
        if key is not None and key != record["site_id"].encode():
            letters.append(("KEY_MISMATCH", repr(value)))
            continue
        verdict = check_telemetry(record, wall_ms(), RULES)
        if verdict is not None:
            letters.append((verdict.reason, repr(value)))
            continue
        reading = Reading.from_millis_record(record)
        shards.setdefault(bucket_of(record["site_id"], SHARDS), []).append(
            (record["site_id"], repr(reading), msg.offset() or 0))
    return letters, shards


@settings(max_examples=60, deadline=None)
@given(st.lists(_entries, min_size=1, max_size=30))
def test_a_poll_routes_as_one_message_at_a_time_would(entries: list[Any]) -> None:
    messages = [_message(i, entry) for i, entry in enumerate(entries)]
    out = route([Polled(TELEMETRY_RAW, 1, messages)], shards=SHARDS, rules=RULES)

    letters = []
    for key, item in out:
        if key == DLQ_KEY:
            letter = codec().decode(cast(KafkaOut, item).value or b"", "DeadLetter")
            letters.append((letter["error_kind"], repr(bytes(letter["original_value"]))))
    batches = [cast(ShardBatch, item) for key, item in out if key != DLQ_KEY]
    shards = {b.shard: [(site, repr(reading), b.origin(i).offset)
                        for i, (site, reading) in enumerate(b.readings)]
              for b in batches if len(b.readings)}
    want_letters, want_shards = _one_at_a_time(messages)
    assert letters == want_letters
    assert shards == want_shards  # the same readings, in arrival order, with where they came from
    newest = max((int(r.split("event_ms=")[1].split(",")[0]) for rows in want_shards.values()
                  for _, r, _ in rows), default=0)
    assert all(b.source_max_ms == newest for b in batches)


_THREE_SITES: list[tuple[str, int, int, dict[str, Any], str]] = [
    (f"site-{'abc'[i % 3]}", i, 0, {}, "same") for i in range(12)]


@settings(max_examples=60, deadline=None)
@given(st.lists(_entries, min_size=1, max_size=30), st.integers(0, 30), st.sampled_from([1, 3]),
       st.lists(st.sampled_from([0, 1_790_000_000_000, 1_790_000_000_007]), min_size=30, max_size=30))
@example(_THREE_SITES, 5, 1, [1_790_000_000_000 + i for i in range(30)])  # offsets in a run
@example(_THREE_SITES, 5, 3, [0] * 30)
def test_a_batch_crossing_to_another_process_names_the_same_origins(
        entries: list[Any], split: int, step: int, stamps: list[int]) -> None:
    """Two polls of a partition in one call, offsets in a run or with gaps, keys or none: each reading
    of a batch pickled to another process (twice, as Bytewax does) names the message it came from."""
    messages = []
    for i, entry in enumerate(entries):
        made = _message(100 + i * step, entry)
        messages.append(Message(topic=TELEMETRY_RAW, partition=1, offset=made.offset(), key=made.key(),
                                value=made.value(), timestamp=(1, stamps[i])))
    polls = [Polled(TELEMETRY_RAW, 1, part) for part in (messages[:split], messages[split:]) if part]
    for key, item in route(polls, shards=SHARDS, rules=RULES):
        if key == DLQ_KEY:
            continue
        batch = cast(ShardBatch, item)
        assert pickle.dumps(batch) == pickle.dumps(batch)  # Bytewax sizes with one pickle, writes another
        copy = pickle.loads(pickle.dumps(batch))
        assert isinstance(copy.origins, OriginColumns) or not len(batch.readings)  # messages never travel
        here = [batch.origin(i) for i in range(len(batch.readings))]
        assert [copy.origin(i) for i in range(len(batch.readings))] == here
        assert all(origin == Origin.of(messages[(origin.offset - 100) // step]) for origin in here)
        assert (copy.shard, copy.source, copy.source_max_ms) == (batch.shard, batch.source,
                                                                 batch.source_max_ms)
