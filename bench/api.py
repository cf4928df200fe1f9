"""``vpp bench api``: live aggregate reads under load, and a year of history at day resolution.

The API runs as its own process (``python -m api``, one uvicorn worker), as
``vpp up`` runs it; the load comes from this process over keep-alive HTTP/1.1
connections with a minimal asyncio client (an HTTP library would cost more
CPU than the server on a 2-core machine).

* ``live_p50_ms`` / ``live_p99_ms``: ``GET /v1/nodes/{id}`` with 50
  connections offering 1,000 requests/s in total on a fixed schedule (open
  loop); latency runs from the scheduled send time, so a stalled server
  counts its queueing (no coordinated omission).
* ``live_max_rps``: the same 50 connections sending back to back (closed
  loop): the sustained rate of the server and the load generator together.
* ``history_year_day_ms``: ``GET /v1/nodes/{feeder}/history`` for 365 days at
  day resolution, median, with a year of day rows for 10,000 sites and every
  node inserted straight into the rollup tables.
* ``live_cpu_us_per_req``: the API process's CPU time (user + system, from
  ``/proc``) during the open-loop phase over the requests answered in it: the
  figure that carries on a shared machine, where latency follows the load.
* Baseline in the same run: ``redis_hgetall_p50_ms``, the Redis read alone
  from this process, which the live read cannot beat.

A private local stack is started in a temporary directory unless settings are
passed in (the tests pass the session stack's).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import redis

from api.auth import Scope, issue_api_token
from assets.generator import Fleet, generate_fleet
from assets.loader import load_fleet
from bench.local import free_port, private_stack, process_cpu_s
from core import history
from core.config import Settings
from schemas.times import epoch_ms
from vpp.dataflows import settings_env

CLIENTS = 50
OFFERED_RPS = 1000
HISTORY_SITES = 10_000
DAYS = 365


def run(quick: bool) -> dict[str, float]:
    """Measure and return the figures (quick: shorter load phases, fewer history queries)."""
    return measure(load_s=5.0 if quick else 20.0, history_queries=5 if quick else 20)


def measure(load_s: float, history_queries: int, sites: int = HISTORY_SITES,
            settings: Settings | None = None) -> dict[str, float]:
    """Every figure, with ``load_s`` seconds per load phase and ``sites`` sites of history."""
    with private_stack("vpp-bench-api-", settings) as stack_settings:
        now = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        fleet = generate_fleet(now - timedelta(days=DAYS + 1), sites, seed=11)
        load_fleet(stack_settings, fleet, now - timedelta(days=DAYS + 1), epoch_ms(now), lambda _: None)
        nodes = _write_live_nodes(stack_settings, fleet, now)
        _insert_year_of_days(stack_settings, fleet, now)
        with _api_process(stack_settings) as (port, pid):
            token = issue_api_token(stack_settings, "bench", {Scope.READ}).token
            paths = [f"/v1/nodes/{node}" for node in nodes]
            feeder = next(n for n in sorted(fleet.registry.nodes) if n.startswith("feeder-"))
            figures = asyncio.run(_live(port, pid, token, paths, load_s))
            figures["history_year_day_ms"], rows = _history_ms(port, token, feeder, now, history_queries)
            figures["history_rows"] = float(rows)
        figures["redis_hgetall_p50_ms"] = _redis_baseline(stack_settings, nodes)
        figures["history_sites"] = float(sites)
    return figures


def _write_live_nodes(settings: Settings, fleet: Fleet, now: datetime) -> list[str]:
    """A node:{id} hash per node, shaped as the telemetry dataflow writes them; the node ids."""
    nodes = sorted(fleet.registry.nodes.values(), key=lambda n: n.node_id)
    with redis.Redis.from_url(settings.redis) as rds:
        pipe = rds.pipeline(transaction=False)
        for i, node in enumerate(nodes):
            members = max(1, len(fleet.registry.members(node.node_id, now)))
            pipe.hset(f"node:{node.node_id}", mapping={
                "node_id": node.node_id, "hierarchy": node.hierarchy, "node_kind": node.kind,
                "event_time": epoch_ms(now), "updated_at": epoch_ms(now), "seq": i,
                "expected_sites": members, "reporting_sites": members - 1, "delayed_sites": 1,
                "offline_sites": 0, "coverage": (members - 1) / members, "battery_kw": 2.5 * members,
                "solar_kw": 3.0 * members, "load_kw": 1.2 * members, "grid_kw": -4.3 * members,
                "energy_available_kwh": 6.0 * members, "charge_headroom_kwh": 4.0 * members,
                "available_discharge_kw": 4.5 * members, "available_charge_kw": 3.5 * members,
                "est_battery_kw": 2.5 * members, "est_energy_available_kwh": 6.1 * members,
                "est_charge_headroom_kwh": 4.1 * members, "est_available_discharge_kw": 4.6 * members,
                "est_available_charge_kw": 3.6 * members, "oldest_knowledge_age_s": 7.0})
        pipe.execute()
    return [n.node_id for n in nodes]


def _insert_year_of_days(settings: Settings, fleet: Fleet, now: datetime) -> None:
    """A day row per site and per node for the past year, generated inside ClickHouse."""
    db = settings.clickhouse_database
    first = now - timedelta(days=DAYS)
    client = history.connect(settings)
    try:
        client.command(
            f"INSERT INTO {db}.site_day SELECT concat('site-', toString(intDiv(number, {DAYS}))), "
            f"toDateTime(%(first)s) + toIntervalDay(modulo(number, {DAYS})), sin(number), -5, 5, 3, 1.2, "
            f"-1.8, 50 + modulo(number, 50), 6.0, 1440, 1.0, 1 FROM numbers({len(fleet.sites) * DAYS})",
            parameters={"first": first})
        nodes = sorted(fleet.registry.nodes.values(), key=lambda n: n.node_id)
        client.insert(f"{db}.node_day", [
            (node.node_id, node.hierarchy, first + timedelta(days=d), 100.0 + d, -500.0, 500.0, 300.0, 120.0,
             -180.0, 4000.0, 3000.0, 150, 148, 148 / 150, 1440, 1)
            for node in nodes for d in range(DAYS)],
            column_names=["node_id", "hierarchy", "period", "battery_kw", "battery_kw_min", "battery_kw_max",
                          "solar_kw", "load_kw", "grid_kw", "energy_available_kwh", "charge_headroom_kwh",
                          "expected_sites", "reporting_sites", "coverage", "minutes", "version"])
    finally:
        client.close()


@contextlib.contextmanager
def _api_process(settings: Settings) -> Iterator[tuple[int, int]]:
    """``python -m api`` on a free port; yields the port and the process id once /healthz answers."""
    port = free_port()
    env = {**os.environ, **settings_env(settings.model_copy(update={"api_port": port}))}
    log = (settings.data_dir / "bench-api.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "api"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not _healthy(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the API did not start; see {settings.data_dir / 'bench-api.log'}")
            time.sleep(0.1)
        yield port, process.pid
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


class _Connection:
    """One keep-alive HTTP/1.1 connection sending GETs with a bearer token."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, token: str) -> None:
        self.reader, self.writer = reader, writer
        self.headers = f"Host: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\r\n"

    @classmethod
    async def open(cls, port: int, token: str) -> _Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer, token)

    async def get(self, path: str) -> int:
        """Send one GET and read the whole answer; the status code."""
        self.writer.write(f"GET {path} HTTP/1.1\r\n{self.headers}".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        await self.reader.readexactly(length)
        return int(head[9:12])

    def close(self) -> None:
        self.writer.close()


async def _live(port: int, pid: int, token: str, paths: list[str], load_s: float) -> dict[str, float]:
    connections = [await _Connection.open(port, token) for _ in range(CLIENTS)]
    try:
        for connection in connections:  # warm-up: every connection and the registry path once
            assert await connection.get(paths[0]) == 200
        latencies: list[float] = []
        interval = CLIENTS / OFFERED_RPS
        started = time.perf_counter() + 0.05
        cpu_before = process_cpu_s(pid)

        async def offered(index: int, connection: _Connection) -> None:
            due = started + index * interval / CLIENTS
            end = started + load_s
            while due < end:
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                status = await connection.get(paths[(index + len(latencies)) % len(paths)])
                latencies.append((time.perf_counter() - due) * 1000)
                if status != 200:
                    raise RuntimeError(f"live read answered {status}")
                due += interval

        await asyncio.gather(*(offered(i, c) for i, c in enumerate(connections)))
        cpu_s = process_cpu_s(pid) - cpu_before
        ordered = sorted(latencies)
        figures = {"live_p50_ms": statistics.median(ordered),
                   "live_p99_ms": ordered[int(0.99 * (len(ordered) - 1))],
                   "live_cpu_us_per_req": cpu_s / len(ordered) * 1e6,
                   "live_offered_rps": float(OFFERED_RPS),
                   "live_achieved_rps": len(ordered) / load_s}
        done = 0
        stop = time.perf_counter() + load_s

        async def flat_out(index: int, connection: _Connection) -> None:
            nonlocal done
            while time.perf_counter() < stop:
                await connection.get(paths[(index + done) % len(paths)])
                done += 1

        began = time.perf_counter()
        await asyncio.gather(*(flat_out(i, c) for i, c in enumerate(connections)))
        figures["live_max_rps"] = done / (time.perf_counter() - began)
        return figures
    finally:
        for connection in connections:
            connection.close()


def _history_ms(port: int, token: str, node: str, now: datetime, queries: int) -> tuple[float, int]:
    query = (f"start={(now - timedelta(days=DAYS)).isoformat()}&end={now.isoformat()}&resolution=day"
             .replace("+", "%2B"))
    url = f"http://127.0.0.1:{port}/v1/nodes/{node}/history?{query}"
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    timings = []
    rows = 0
    for _ in range(queries + 1):  # the first one also loads the registry: not counted
        began = time.perf_counter()
        with urllib.request.urlopen(request, timeout=30) as response:
            body = response.read()
        timings.append((time.perf_counter() - began) * 1000)
        rows = len(json.loads(body)["data"])
    return statistics.median(timings[1:]), rows


def _redis_baseline(settings: Settings, nodes: list[str]) -> float:
    with redis.Redis.from_url(settings.redis) as rds:
        timings = []
        for i in range(2000):
            began = time.perf_counter()
            rds.hgetall(f"node:{nodes[i % len(nodes)]}")
            timings.append((time.perf_counter() - began) * 1000)
    return statistics.median(timings)
