"""`vpp down` then `vpp up` with the memory-only local broker: the system comes back working.

The broker returns empty while the dataflows' recovery stores hold offsets of the
old logs; before the Kafka source checked the topic's incarnation, the telemetry
flow waited for offsets the new logs had not reached (no live aggregates) and the
control flow never saw a new dispatch. Here the whole system restarts twice (the
second time without ``--sites``, which must keep the registered fleet rather than
simulate the default 1,000 sites): after each restart new telemetry reaches the
live aggregates, a new dispatch is taken up, and history written before is intact.

Slow (two `vpp up` / `vpp down` cycles): ``pytest -m slow tests/integration/test_restart.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import clickhouse_connect
import pytest
import redis

from core import keys
from core.waiting import wait_until
from tests.conftest import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SITES = 20
#: Generous on a busy machine; the issue's target (30 s after `vpp up` returns) is for the chaos bench.
LIVE_DEADLINE_S = 120.0


def _vpp(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vpp.cli", *args], env=env, capture_output=True, text=True,
                          check=False, timeout=300)


def _up(env: dict[str, str], *args: str) -> str:
    up = _vpp(env, "up", *args)
    assert up.returncode == 0, up.stdout + up.stderr
    return up.stdout


def _live_after(client: redis.Redis, since_ms: int) -> bool:
    """Every simulated site reports at the state node, in an aggregate newer than ``since_ms``."""
    fields = client.hgetall("node:state-0")
    return (int(fields.get("reporting_sites", 0)) == SITES
            and int(float(fields.get("event_time", 0))) > since_ms)


def _dispatch_is_taken_up(env: dict[str, str], client: redis.Redis) -> str:
    ident = f"restart-{uuid.uuid4().hex[:8]}"
    sent = _vpp(env, "dispatch", "state-0", "--kw", "5", "--minutes", "10", "--no-follow", "--id", ident)
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert wait_until(lambda: client.hget(keys.dispatch_status(ident), "state") is not None,
                      LIVE_DEADLINE_S, interval_s=0.5), f"the control dataflow never took up dispatch {ident}"
    return ident


def _logged_dispatches(env: dict[str, str]) -> set[str]:
    client = clickhouse_connect.get_client(host="127.0.0.1", port=int(env["VPP_CLICKHOUSE_PORT"]))
    try:
        rows = client.query("SELECT DISTINCT dispatch_id FROM vpp.dispatch_log").result_rows
    finally:
        client.close()
    return {row[0] for row in rows}


def test_down_and_up_twice_the_system_works_and_history_survives(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VPP_")}
    redis_port = free_port()
    env.update(VPP_DATA_DIR=str(tmp_path), VPP_KAFKA_PORT=str(free_port()), VPP_REDIS_PORT=str(redis_port),
               VPP_CLICKHOUSE_PORT=str(free_port()), VPP_GATEWAY_PORT=str(free_port()),
               VPP_GATEWAY_METRICS_PORT=str(free_port()), VPP_API_PORT=str(free_port()),
               VPP_DEFAULT_PARTITIONS="1",  # every stored offset lies beyond the new, short logs
               COLUMNS="200")
    client = redis.Redis(port=redis_port, decode_responses=True)
    dispatched: set[str] = set()
    try:
        _up(env, "--sites", str(SITES))
        assert wait_until(lambda: _live_after(client, 0), LIVE_DEADLINE_S, interval_s=0.5)
        dispatched.add(_dispatch_is_taken_up(env, client))
        # Let the dataflows record an epoch (snapshot_interval_s) after the dispatch: offsets now stored.
        assert wait_until(lambda: dispatched <= _logged_dispatches(env), LIVE_DEADLINE_S, interval_s=1)
        time.sleep(6)

        for args in ((), ("--sites", str(SITES))):
            down = _vpp(env, "down")
            assert down.returncode == 0, down.stdout + down.stderr
            restarted_ms = int(time.time() * 1000)
            out = _up(env, *args)
            assert f"{SITES} sites ->" in out, "a re-run keeps the registered fleet"
            assert wait_until(lambda since=restarted_ms: _live_after(client, since), LIVE_DEADLINE_S,  # type: ignore[misc]
                              interval_s=0.5), \
                f"no new telemetry at the live aggregates after restarting with {args or 'no --sites'}"
            dispatched.add(_dispatch_is_taken_up(env, client))
            assert wait_until(lambda: dispatched <= _logged_dispatches(env), LIVE_DEADLINE_S, interval_s=1), \
                "history from before the restart is intact, and the new dispatch is journaled"
            time.sleep(6)
    finally:
        _vpp(env, "down")
