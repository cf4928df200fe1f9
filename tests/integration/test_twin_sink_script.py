"""The twin sink's many-hashes-per-call script writes exactly what one call per hash wrote.

The reference is the per-hash script the sink ran before (one EVALSHA per write, copied here
verbatim): random sequences of versioned writes, with ceilings, stored versions from a clock
running ahead, empty field values, no fields, and the same hash several times in one batch, go
once through the sink and once through the reference, one write at a time; every hash must end
the same. Runs against the session stack's Redis, each example under keys of its own.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from core.config import Settings
from operators.sinks import WRITES_PER_CALL, RedisTwinSink, TwinWrite, pack

pytestmark = pytest.mark.integration

#: The sink's script before it wrote many hashes per call: one hash, ``ARGV`` = va, vb, fields, ceiling.
_REFERENCE = r"""
local stored = redis.call('HMGET', KEYS[1], '_va', '_vb')
local a, b = tonumber(ARGV[1]), tonumber(ARGV[2])
local sa, sb = tonumber(stored[1] or '-1'), tonumber(stored[2] or '-1')
local ceiling = tonumber(ARGV[4] or '-1')
if ceiling >= 0 and sa > ceiling then
  sa, sb = -1, -1
end
if a < sa or (a == sa and b < sb) then
  return 0
end
local args = {'_va', ARGV[1], '_vb', ARGV[2]}
for part in string.gmatch(ARGV[3], '([^\31]*)\31?') do
  args[#args + 1] = part
end
if #args % 2 == 1 then
  args[#args] = nil
end
redis.call('HSET', KEYS[1], unpack(args))
return 1
"""
_examples = itertools.count()
#: One write: which of four hashes, the version's two parts, the ceiling, the fields.
Write = tuple[int, int, int, int | None, dict[str, object]]

_fields = st.dictionaries(st.sampled_from(["status", "soc_pct", "last_seen", "mode", "note"]),
                          st.one_of(st.integers(-5, 10**13), st.floats(-1e6, 1e6, allow_nan=False),
                                    st.sampled_from(["", "ONLINE", "a b", "x=y"])), max_size=5)
_writes = st.lists(st.tuples(st.integers(0, 3), st.integers(0, 40), st.integers(0, 3),
                             st.one_of(st.none(), st.integers(0, 40)), _fields), min_size=1, max_size=30)


@pytest.fixture(scope="module")
def client(stack_settings: Settings) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(stack_settings.redis, decode_responses=True) as connection:
        yield connection


def _hashes(client: redis.Redis, prefix: str, count: int) -> list[dict[Any, Any]]:
    return [client.hgetall(f"{prefix}{i}") for i in range(count)]


@settings(max_examples=60)
@given(writes=_writes, cut=st.integers(1, 30))
def test_the_batched_script_ends_every_hash_as_the_per_hash_script_does(
        stack_settings: Settings, client: redis.Redis, writes: list[Write], cut: int) -> None:
    run = next(_examples)
    reference = client.register_script(_REFERENCE)
    partition = RedisTwinSink(stack_settings.redis).build("redis", 0, 1)
    ours, theirs = f"sink-ours-{run}-", f"sink-ref-{run}-"
    items = [(key, TwinWrite(f"{ours}{key}", (a, b), fields, ceiling))
             for key, a, b, ceiling, fields in writes]
    for start in range(0, len(items), cut):  # the sink sees the sequence in batches of ``cut``
        partition.write_batch([write for _, write in items[start:start + cut]])
    for key, write in items:
        reference(keys=[f"{theirs}{key}"], args=[write.version[0], write.version[1], pack(write.fields),
                                                  -1 if write.ceiling is None else write.ceiling])
    assert _hashes(client, ours, 4) == _hashes(client, theirs, 4)
    partition.close()


def test_a_batch_longer_than_one_call_lands_whole_and_a_stored_future_version_yields(
        stack_settings: Settings, client: redis.Redis) -> None:
    count = WRITES_PER_CALL * 2 + 7
    client.delete(*[f"sink-long-{i}" for i in range(count)])
    client.hset("sink-long-0", mapping={"_va": 10**15, "_vb": 0, "status": "FROM-THE-FUTURE"})
    partition = RedisTwinSink(stack_settings.redis).build("redis", 0, 1)
    partition.write_batch([TwinWrite(f"sink-long-{i}", (100, 0), {"status": "ONLINE", "n": i}, 1_000)
                           for i in range(count)])
    partition.write_batch([TwinWrite(f"sink-long-{i}", (99, 5), {"status": "OLDER"}, 1_000)
                           for i in range(count)])
    stored = [client.hgetall(f"sink-long-{i}") for i in range(count)]
    assert all(h == {"_va": "100", "_vb": "0", "status": "ONLINE", "n": str(i)} for i, h in enumerate(stored))
    partition.close()
