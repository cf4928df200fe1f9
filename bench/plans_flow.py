"""The plans benchmark's dataflow figures: 10,000 plans through the real plans dataflow, and freshness.

On a private stack (broker, Redis, history server) with the real plans dataflow
running live (``dataflows.plans``, recovery on, default settings: an aggregation
once the input pauses for ``plans_settle_s`` = 0.1 s after a change, at the
latest ``plans_emit_interval_s`` = 1 s after the last one):

* ``aggregate_10k_s``: 10,000 SitePlan records (one per site, three hierarchies)
  produced at once; the time from the last one being delivered to the broker
  until the aggregate plan of the node over all of them (``plan:node:{id}`` in
  Redis) counts every one. Target: at most 2 s. ``aggregate_10k_total_s`` is the
  time from the first plan produced; ``aggregate_10k_flow_cpu_s`` the CPU time the
  dataflow process spent from the first plan produced until then, and
  ``flow_idle_cpu_share`` the share of a core the idle flow used (it polls) over
  :data:`IDLE_S` before the burst. The CPU time is the burst's work plus the idle
  share of the wall time; it depends far less on how busy the machine is than the
  wall-clock figures (on an idle machine those are about this work plus the
  waits). Subtracting the idle share is only an estimate: under heavy load it
  varies too much.
* ``plan_freshness_p50_s`` / ``plan_freshness_p99_s``: plans for sites that had
  none arrive steadily (``rate`` a second); a plan's freshness is the time from
  its delivery to the broker until the node's aggregate in Redis first counts it
  (the node's planned-site count reaching its rank), read every 20 ms. Target:
  p99 at most 5 s.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import redis
from confluent_kafka import Producer

from bench.local import private_stack, process_cpu_s
from core import keys
from core.config import Settings
from core.kafka import client_config
from core.topics import ASSETS_CHANGES, PLANS_SITE
from schemas import AvroCodec, packaged_codec
from vpp.dataflows import dataflow_argv, ensure_recovery, settings_env

#: How long the idle dataflow's CPU rate is measured before the burst, seconds.
IDLE_S = 2.0
#: The node every benchmark site is under (geographic hierarchy).
TOP = "state-0"


def _ancestry(i: int, at: datetime) -> dict[str, Any]:
    """Site ``i`` of a synthetic fleet: 150 sites a feeder, 100 postcodes, three programs, one state."""
    feeder = i // 150
    chains = {"electrical": [f"feeder-{feeder}", f"substation-{feeder // 8}", f"region-{feeder // 40}"],
              "geographic": [f"postcode-{i % 100}", f"county-{i % 10}", TOP],
              "program": [f"program-{i % 3}"]}
    return {"site_id": f"site-{i:06d}", "version": 1, "event_time": at, "effective_from": at,
            "retired": False,
            "capacity_kwh": 13.5, "max_charge_kw": 5.0, "max_discharge_kw": 5.0, "reserve_pct": 20.0,
            "solar_kwp": 5.0, "customer_id": None, "region": f"region-{feeder // 40}", "tariff": None,
            "paths": [{"hierarchy": h, "node_ids": nodes, "valid_from": at, "valid_to": None}
                      for h, nodes in chains.items()]}


def _plan(codec: AvroCodec, i: int, shape: list[float], now: datetime) -> bytes:
    start = now.replace(minute=now.minute - now.minute % 15, second=0, microsecond=0)
    return codec.encode("SitePlan", {
        "site_id": f"site-{i:06d}", "plan_id": f"site-{i:06d}-{time.time_ns()}", "issued_at": now,
        "start": start, "interval_minutes": 15, "power_kw": shape, "forecast_issued_at": now})


def _planned(client: redis.Redis) -> int:
    """Sites the top node's aggregate counts as planned in its first interval (0 before any)."""
    raw = client.hget(keys.node_plan(TOP), "planned_sites")
    return int(json.loads(raw)[0]) if raw else 0


def _expected(client: redis.Redis) -> int:
    raw = client.hget(keys.node_plan(TOP), "expected_sites")
    return int(raw) if raw else 0


def _wait(condition: Any, timeout_s: float, what: str, poll_s: float = 0.02) -> float:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return time.monotonic()
        time.sleep(poll_s)
    raise TimeoutError(f"the plans dataflow did not {what} within {timeout_s:.0f} s")


def _delivered(producer: Producer) -> None:
    if producer.flush(60) > 0:
        raise RuntimeError("plans were not delivered to the broker")


def measure(burst: int = 10_000, steady: int = 1_000, rate: float = 100.0,
            shapes: list[list[float]] | None = None, settings: Settings | None = None) -> dict[str, float]:
    """The figures (see the module docstring) on a private stack (or the one ``settings`` names)."""
    codec = packaged_codec()
    shapes = shapes or [[0.5 * np.sin(k * np.pi / 48 + s) for k in range(96)] for s in range(20)]
    sites = burst + steady
    with private_stack("vpp-bench-plans-", settings) as own, tempfile.TemporaryDirectory() as scratch:
        producer = Producer(client_config(own, **{"linger.ms": 5}))
        at = datetime.now(UTC) - timedelta(hours=1)
        for i in range(sites):
            producer.produce(ASSETS_CHANGES, key=f"site-{i:06d}".encode(), value=codec.encode("SiteAncestry",
                                                                                            _ancestry(i, at)))
        _delivered(producer)
        recovery = Path(scratch) / "recovery"
        ensure_recovery(recovery)
        env = {**os.environ, **settings_env(own.model_copy(update={"dataflow_tail": True}))}
        flow = subprocess.Popen(dataflow_argv("plans", own, 1, recovery), env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        client = redis.Redis.from_url(own.redis)
        try:
            _wait(lambda: _expected(client) == sites, 120, "register the fleet")
            idle_from, idle_cpu = time.monotonic(), process_cpu_s(flow.pid)
            time.sleep(IDLE_S)
            first = time.monotonic()
            cpu_before = process_cpu_s(flow.pid)
            idle_rate = (cpu_before - idle_cpu) / (first - idle_from)
            now = datetime.now(UTC)
            for i in range(burst):
                producer.produce(PLANS_SITE, key=f"site-{i:06d}".encode(),
                                 value=_plan(codec, i, shapes[i % 20], now))
                if i % 1000 == 0:
                    producer.poll(0)
            _delivered(producer)
            last = time.monotonic()
            done = _wait(lambda: _planned(client) >= burst, 60, f"aggregate {burst:,} plans")
            figures = {"aggregate_10k_s": done - last, "aggregate_10k_total_s": done - first,
                       "aggregate_10k_flow_cpu_s": process_cpu_s(flow.pid) - cpu_before,
                       "flow_idle_cpu_share": idle_rate, "aggregate_plans": float(burst)}

            sent: list[float] = []
            seen: list[float] = []
            next_at = time.monotonic()
            for k in range(steady):
                i = burst + k
                producer.produce(PLANS_SITE, key=f"site-{i:06d}".encode(),
                                 value=_plan(codec, i, shapes[i % 20], datetime.now(UTC)))
                producer.flush(5)
                sent.append(time.monotonic())
                counted = _planned(client) - burst
                while len(seen) < min(counted, len(sent)):
                    seen.append(time.monotonic())
                next_at += 1.0 / rate
                pause = next_at - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
            deadline = time.monotonic() + 60
            while len(seen) < steady and time.monotonic() < deadline:
                counted = _planned(client) - burst
                while len(seen) < counted:
                    seen.append(time.monotonic())
                time.sleep(0.02)
            if len(seen) < steady:
                raise TimeoutError(f"only {len(seen)} of {steady} steady plans were aggregated within 60 s")
            ages = np.array(seen) - np.array(sent)
            figures["plan_freshness_p50_s"] = float(np.percentile(ages, 50))
            figures["plan_freshness_p99_s"] = float(np.percentile(ages, 99))
            figures["plan_freshness_plans"] = float(steady)
        finally:
            client.close()
            flow.terminate()
            try:
                flow.wait(timeout=20)
            except subprocess.TimeoutExpired:
                flow.kill()
    return figures
