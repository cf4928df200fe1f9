"""``dispatch_e2e_ms_10k``: from a dispatch request to every command on ``commands.site``, for 10,000 sites.

A private local stack, 10,000 site twins written straight into Redis (as the
telemetry dataflow would: ONLINE, with limits and energy) under one node, and
the real control dataflow. Each round submits a dispatch for the node through
:func:`core.dispatch.submit` and times until a consumer that was already
waiting at the end of ``commands.site`` has seen a command for every site;
the dispatch is then cancelled so it does not weigh on the next round.
The baseline in the same run is the bare Kafka round trip: one record
produced and consumed through the same broker.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from datetime import UTC, datetime, timedelta

import redis
from confluent_kafka import Consumer, Producer

from bench.local import private_stack, tail_consumer
from core.config import Settings
from core.dispatch import cancel, read_status, submit
from core.dispatch_spec import DispatchSpec
from core.kafka import client_config
from core.topics import COMMANDS_SITE
from schemas import packaged_codec
from schemas.times import epoch_ms
from vpp.dataflows import dataflow_argv, settings_env

NODE = "bench-node"
#: After a cancel: its release commands lapse (2 s) and its journal rows are written, so rounds don't overlap.
RELEASE_S = 4.0


def _write_twins(client: redis.Redis, n: int) -> None:
    now = epoch_ms(datetime.now(UTC))
    pipe = client.pipeline(transaction=False)
    ids = [f"bench-site-{i:06d}" for i in range(n)]
    for i, site_id in enumerate(ids):
        pipe.hset(f"site:{site_id}", mapping={
            "status": "ONLINE", "battery_kw": 0.0, "last_seen": now, "max_discharge_kw": 5.0,
            "max_charge_kw": 5.0, "energy_available_kwh": 4.0 + i % 7, "charge_headroom_kwh": 3.0,
            "solar_kw": 0.0, "load_kw": 0.5, "active_command_id": ""})
    pipe.delete(f"node:{NODE}:sites")
    pipe.sadd(f"node:{NODE}:sites", *ids)
    pipe.execute()


def _round(settings: Settings, client: redis.Redis, consumer: Consumer, n: int) -> tuple[float, float]:
    """(ms to the first command, ms to the last) for one dispatch of ``n`` sites."""
    start = datetime.now(UTC)
    spec = DispatchSpec(0.6 * 5.0 * n, start, start + timedelta(minutes=5), node_id=NODE)
    prefix = f"{spec.dispatch_id}/".encode()
    seen: set[bytes] = set()
    first = 0.0
    began = time.perf_counter()
    submit(settings, spec, "bench", client)
    while len(seen) < n:
        if time.perf_counter() - began > 60:
            raise TimeoutError(f"only {len(seen)} of {n} commands within 60 s")
        for message in consumer.consume(10_000, 0.05):
            value = message.value()
            if value is not None and prefix in value:
                seen.add(message.key() or b"")
                first = first or time.perf_counter() - began
    elapsed = (time.perf_counter() - began) * 1000
    _wait_for_state(client, spec.dispatch_id, "ACTIVE")
    cancel(settings, spec.dispatch_id, "bench", client)
    _wait_for_state(client, spec.dispatch_id, "CANCELLED")
    time.sleep(RELEASE_S)
    return first * 1000, elapsed


def _wait_for_state(client: redis.Redis, dispatch_id: str, state: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while (read_status(client, dispatch_id) or {}).get("state") != state:
        if time.monotonic() > deadline:
            raise TimeoutError(f"dispatch {dispatch_id} did not become {state} within {timeout_s} s")
        time.sleep(0.05)


def _kafka_round_trip_ms(settings: Settings, consumer: Consumer) -> float:
    producer = Producer(client_config(settings))
    codec = packaged_codec()
    now = datetime.now(UTC)
    value = codec.encode("SiteCommand", {
        "command_id": "baseline/x/1", "dispatch_id": "baseline", "site_id": "x", "setpoint_kw": 0.0,
        "valid_from": now, "valid_until": now, "attempt": 1, "issued_at": now})
    began = time.perf_counter()
    producer.produce(COMMANDS_SITE, key=b"x", value=value)
    producer.flush(10)
    while not any(m.key() == b"x" for m in consumer.consume(100, 0.05)):
        if time.perf_counter() - began > 10:
            raise TimeoutError("the baseline record did not come back")
    return (time.perf_counter() - began) * 1000


def measure(rounds: int, sites: int = 10_000) -> dict[str, float]:
    """Median request-to-all-commands (and to the first command) time and the Kafka baseline, in ms."""
    with private_stack("vpp-bench-e2e-") as settings:
        client = redis.Redis.from_url(settings.redis)
        _write_twins(client, sites)
        env = {**os.environ, **settings_env(settings)}
        log = (settings.data_dir / "control.log").open("wb")
        flow = subprocess.Popen(dataflow_argv("control", settings), env=env, stdout=log, stderr=log)
        try:
            consumer = tail_consumer(settings, [COMMANDS_SITE], f"bench-e2e-{time.time_ns()}",
                                     **{"fetch.wait.max.ms": 20})
            _round(settings, client, consumer, sites)  # warm-up: imports, connections, first allocation
            timings = [_round(settings, client, consumer, sites) for _ in range(rounds)]
            baseline = statistics.median(_kafka_round_trip_ms(settings, consumer) for _ in range(5))
            consumer.close()
        finally:
            flow.terminate()
            flow.wait(20)
    return {"dispatch_e2e_ms_10k": statistics.median(t[1] for t in timings),
            "dispatch_first_command_ms_10k": statistics.median(t[0] for t in timings),
            "kafka_round_trip_baseline_ms": baseline}
