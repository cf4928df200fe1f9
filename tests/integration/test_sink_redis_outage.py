"""A dataflow's Redis sink outlives a Redis that stops, pauses or restarts mid-run.

Before, the first batch written while Redis was down raised out of the sink and
the telemetry flow exited (``error writing output batch``). Now the sink holds
the batch, retries it with a bounded backoff and carries on when Redis is back:
every write lands, none twice (the guarded script keeps the newest version); and
the process's readiness says Redis fails (or a write hangs) meanwhile, not after.
Each test runs its own redis-server (the shared stack's must stay up).
"""

from __future__ import annotations

import logging
import os
import signal
import threading

import pytest
import redis

from core.waiting import wait_until
from operators.readiness import FLOW_HEALTH
from operators.sinks import RedisTwinSink, TwinWrite
from tests.own_redis import RedisServer

pytestmark = pytest.mark.integration




def _writes(first: int, count: int) -> list[TwinWrite]:
    return [TwinWrite(f"site:outage-{i}", (i, 0), {"soc_pct": float(i)}) for i in range(first, first + count)]


def _write_in_background(partition: object, items: list[TwinWrite]) -> threading.Thread:
    thread = threading.Thread(target=partition.write_batch, args=(items,), daemon=True)  # type: ignore[attr-defined]
    thread.start()
    return thread


def test_writes_wait_through_a_redis_restart_and_land(own_redis: RedisServer,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    partition = RedisTwinSink(f"redis://127.0.0.1:{own_redis.port}").build("redis", 0, 1)
    partition.write_batch(_writes(0, 10))
    own_redis.stop()
    with caplog.at_level(logging.WARNING, logger="operators.sinks"):
        writer = _write_in_background(partition, _writes(10, 10))
        assert wait_until(lambda: "cannot be reached" in caplog.text, 60), "the outage was logged"
        assert writer.is_alive(), "the sink waits for Redis instead of failing the flow"
        assert FLOW_HEALTH.ready(stall_s=60).detail["failing"] == ["redis"], "readiness says why"
        own_redis.start()  # empty: nothing was saved
        writer.join(120)
        assert not writer.is_alive(), "the held batch was written once Redis answered"
        partition.write_batch(_writes(20, 5))
        assert FLOW_HEALTH.ready(stall_s=60).detail["failing"] == []
    assert caplog.text.count("cannot be reached") == 1, "one warning per outage, not per attempt"
    assert "answers again" in caplog.text
    with redis.Redis(port=own_redis.port, decode_responses=True) as client:
        assert {int(k.split("-")[1]) for k in client.scan_iter("site:outage-*")} == set(range(10, 25))
    partition.close()


def test_writes_wait_through_a_paused_redis(own_redis: RedisServer) -> None:
    partition = RedisTwinSink(f"redis://127.0.0.1:{own_redis.port}").build("redis", 0, 1)
    assert own_redis.process is not None
    os.kill(own_redis.process.pid, signal.SIGSTOP)
    writer = _write_in_background(partition, _writes(0, 10))
    try:
        assert not wait_until(lambda: not writer.is_alive(), 1.0), "nothing is written while Redis is paused"
        assert wait_until(lambda: "redis" in str(FLOW_HEALTH.ready(stall_s=0.5).detail["status"]), 60), (
            "the hanging write (then the timeout) makes the flow not ready")
    finally:
        os.kill(own_redis.process.pid, signal.SIGCONT)
    writer.join(120)
    assert not writer.is_alive()
    with redis.Redis(port=own_redis.port, decode_responses=True) as client:
        assert client.hget("site:outage-7", "soc_pct") == "7.0"
    assert "redis" not in str(FLOW_HEALTH.ready(stall_s=60).detail["status"])
    partition.close()
