"""``vpp bench telemetry``: throughput, freshness and state size of the telemetry dataflow.

(a) Throughput from a preloaded ``telemetry.raw`` (10,000 sites; the readings
of the last three minutes, 1,800,000 messages, as a backlog after an outage,
so shards tick at their catch-up cadence), one process and two processes,
against the decode-only baseline on the same topic in the same run (medians of
three interleaved rounds). Each rate is messages / (run time - start-up
time), where start-up is the same flow run on empty topics, so Python and
Kafka start-up do not count.
(b) Freshness in real time at 10,000 sites x 1 Hz: a producer sends every
site's reading each second stamped with the wall clock. Freshness is, per
emission of each program (VPP-level) node, the time it was written to Redis
minus the event time of the newest data it includes; staleness is what a
reader polling every 50 ms sees (now minus that event time), which adds the
time since the last emission.
(c) State per site: shard snapshots as the recovery store keeps them (pickled and
compressed, ``shard_snapshot``) over the number of sites.
(d) CPU time, which a busy shared machine disturbs far less than wall time: the
same throughput runs as messages per CPU-second of the flow processes
(``*_per_cpu_s``; decode-only is the baseline; start-up CPU, the median of three
runs on empty topics, subtracted), and the shard alone, in this process
(``shard_readings_per_cpu_s``: readings through ``Shard.apply`` and
``Shard.tick`` per CPU-second, 10,000 sites in 32 shards, a reading per site
and second, a tick every 5 s as in a catch-up).
(e) ``cpu_efficiency_2proc``: ``msgs_per_cpu_s_2proc / msgs_per_cpu_s_1proc``,
paired by round, the median. It is the part of one process's rate per
CPU-second that two processes keep (what is lost: the cross-process exchange,
a second set of sinks and clients); with a core each, two processes go at most
twice that as fast as one. The wall rates cannot show that on a machine whose
two cores also run the broker and Redis. Two caveats: two busy cores are not
free (beside a busy loop on the other core, one flow process needed 7-9% more
CPU per message on the 2-core machine of issue 21), and shards tick by the wall
clock (a catching-up shard every 5 s, flushing its twins), so a run that a busy
machine slows does more work: the efficiency falls with load.

The benchmark starts a private stack on free ports in a temporary directory.
"""

from __future__ import annotations

import math
import os
import random
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import redis
from confluent_kafka import Producer

from core.config import Settings
from core.kafka import client_config
from core.topics import ASSETS_CHANGES, TELEMETRY_RAW
from operators.shard import Shard, bucket_of
from operators.telemetry_steps import shard_config, shard_snapshot
from operators.twin import Reading
from schemas import AvroCodec, packaged_codec
from vpp.dataflows import settings_env
from vpp.stack import running

PROGRAMS = 3


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def _private_stack() -> Iterator[Settings]:
    with tempfile.TemporaryDirectory(prefix="vpp-bench-telemetry-") as tmp:
        settings = Settings(data_dir=Path(tmp), kafka_port=_free_port(), redis_port=_free_port(),
                            clickhouse_port=_free_port(), topic_partitions={TELEMETRY_RAW: 6})
        with running(settings):
            yield settings


def _ancestry(i: int, at: datetime) -> dict[str, object]:
    """Site ``i`` of a synthetic fleet: 50 sites a feeder, 400 postcodes, three programs."""
    feeder = i // 50
    chains = {
        "electrical": [f"feeder-{feeder}", f"substation-{feeder // 10}", f"region-{feeder // 100}"],
        "geographic": [f"postcode-{i % 400}", f"county-{i % 40}", f"state-{i % 4}"],
        "program": [f"program-{i % PROGRAMS}"],
    }
    paths = [{"hierarchy": h, "node_ids": nodes, "valid_from": at, "valid_to": None}
             for h, nodes in chains.items()]
    return {"site_id": f"site-{i:06d}", "version": 1, "event_time": at, "effective_from": at,
            "retired": False, "capacity_kwh": 13.5, "max_charge_kw": 5.0, "max_discharge_kw": 5.0,
            "reserve_pct": 20.0, "solar_kwp": 5.0, "customer_id": None, "region": f"region-{feeder // 100}",
            "tariff": None, "paths": paths}


def _reading(codec: AvroCodec, i: int, seq: int, event_time: datetime, rng: random.Random) -> bytes:
    return codec.encode("SiteTelemetry", {
        "site_id": f"site-{i:06d}", "seq": seq, "event_time": event_time, "received_time": None,
        "soc_pct": rng.uniform(20, 100), "battery_kw": rng.uniform(-5, 5), "solar_kw": rng.uniform(0, 5),
        "load_kw": rng.uniform(0, 3), "grid_kw": rng.uniform(-3, 3), "battery_temp_c": 25.0,
        "mode": "SELF_CONSUMPTION", "active_command_id": None, "firmware": "1.0"})


def _load_fleet(settings: Settings, producer: Producer, codec: AvroCodec, sites: int) -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    for i in range(sites):
        producer.produce(ASSETS_CHANGES, key=f"site-{i:06d}".encode(), value=codec.encode("SiteAncestry",
                                                                                          _ancestry(i, at)))
    producer.flush(60)


def _preload(settings: Settings, sites: int, seconds: int) -> int:
    codec = packaged_codec()
    producer = Producer(client_config(settings, **{"linger.ms": 50, "batch.num.messages": 10_000}))
    _load_fleet(settings, producer, codec, sites)
    rng = random.Random(0)
    # A backlog as after an outage: the readings of the last ``seconds`` seconds, not yet processed.
    start = int(time.time()) - seconds - 5
    for second in range(seconds):
        event_time = datetime.fromtimestamp(start + second, UTC)
        for i in range(sites):
            producer.produce(TELEMETRY_RAW, key=f"site-{i:06d}".encode(),
                             value=_reading(codec, i, second, event_time, rng))
            if i % 5000 == 0:
                producer.poll(0)
    producer.flush(120)
    return sites * seconds


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run_flow(settings: Settings, target: str, processes: int) -> tuple[float, float]:
    """Seconds until every process of ``target`` has consumed its topics to the end and exited, and
    the CPU seconds its processes used."""
    bounded = settings.model_copy(update={"dataflow_tail": False})
    env = {**os.environ, **settings_env(bounded)}
    addresses = ";".join(f"127.0.0.1:{_free_port()}" for _ in range(processes))
    started, cpu = time.perf_counter(), _children_cpu_s()
    running = []
    for pid in range(processes):
        argv = [sys.executable, "-m", "bytewax.run", target]
        if processes > 1:
            argv += ["-i", str(pid), "-a", addresses]
        running.append(subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
    for process in running:
        _, err = process.communicate(timeout=1800)
        if process.returncode != 0:
            raise RuntimeError(f"{target} failed: {err.decode(errors='replace')[-2000:]}")
    return time.perf_counter() - started, _children_cpu_s() - cpu


def _throughput(sites: int, seconds: int, repeats: int = 1) -> dict[str, float]:
    """Rates of the decode-only baseline, one and two processes: medians of ``repeats`` rounds.

    The rounds interleave the three runs on the same preloaded topic, so drift of a shared
    machine hits all three alike; the spread of the one-process rate is reported too.
    """
    runs = {"decode_only_msgs_per_s": ("bench.telemetry_flows:decode_only", 1),
            "msgs_per_s_1proc": ("dataflows.telemetry:flow", 1),
            "msgs_per_s_2proc": ("dataflows.telemetry:flow", 2)}
    rates: dict[str, list[float]] = {key: [] for key in runs}
    cpu_keys = {"decode_only_msgs_per_s": "decode_only_msgs_per_cpu_s",
                "msgs_per_s_1proc": "msgs_per_cpu_s_1proc", "msgs_per_s_2proc": "msgs_per_cpu_s_2proc"}
    cpu_rates: dict[str, list[float]] = {cpu_keys[key]: [] for key in runs}
    with _private_stack() as settings:
        # start-up: the same runs while the topics are still empty (one stack, not one more)
        startup = {p: _startup(settings, "dataflows.telemetry:flow", p) for p in (1, 2)}
        startup_decode = _startup(settings, "bench.telemetry_flows:decode_only", 1)
        messages = _preload(settings, sites, seconds)
        for _ in range(repeats):
            for (key, (target, processes)), cpu_key in zip(runs.items(), cpu_rates, strict=True):
                base = startup_decode if target.startswith("bench.") else startup[processes]
                elapsed, cpu = _run_flow(settings, target, processes)
                rates[key].append(_rate(messages, elapsed - base[0]))
                cpu_rates[cpu_key].append(_rate(messages, cpu - base[1]))
    figures = {key: _median(values) for key, values in (rates | cpu_rates).items()}
    # Paired by round (the two runs of a round are minutes apart at most), then the median.
    figures["cpu_efficiency_2proc"] = _median([two / one for one, two in zip(
        cpu_rates["msgs_per_cpu_s_1proc"], cpu_rates["msgs_per_cpu_s_2proc"], strict=True)])
    figures.update(messages=float(messages), rounds=float(repeats), startup_s_1proc=startup[1][0],
                   msgs_per_s_1proc_min=min(rates["msgs_per_s_1proc"]),
                   msgs_per_s_1proc_max=max(rates["msgs_per_s_1proc"]))
    return figures


def _startup(settings: Settings, target: str, processes: int, runs: int = 3) -> tuple[float, float]:
    """Wall and CPU seconds of ``target`` on empty topics: the medians of ``runs`` runs (the CPU of a
    single two-process start-up varied from 1.4 to 1.9 s, a tenth of a whole run's CPU)."""
    measured = [_run_flow(settings, target, processes) for _ in range(runs)]
    return statistics.median(m[0] for m in measured), statistics.median(m[1] for m in measured)


def _rate(messages: int, net_s: float) -> float:
    """Messages per second of net time; NaN when start-up (measured in another run) took longer than
    the whole run, which a busy machine can do to a short run: no figure rather than a huge one."""
    return messages / net_s if net_s > 0 else float("nan")


def _median(values: list[float]) -> float:
    known = [v for v in values if not math.isnan(v)]
    return statistics.median(known) if known else float("nan")


def _freshness(sites: int, duration_s: float) -> dict[str, float]:
    with _private_stack() as settings:
        codec = packaged_codec()
        producer = Producer(client_config(settings, **{"linger.ms": 5}))
        _load_fleet(settings, producer, codec, sites)
        env = {**os.environ, **settings_env(settings)}
        flow = subprocess.Popen([sys.executable, "-m", "bytewax.run", "dataflows.telemetry:flow"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        stop = threading.Event()

        def produce() -> None:
            rng = random.Random(1)
            seq = 0
            while not stop.is_set():
                tick = time.time()
                for i in range(sites):
                    producer.produce(TELEMETRY_RAW, key=f"site-{i:06d}".encode(),
                                     value=_reading(codec, i, seq, datetime.now(UTC), rng))
                    if i % 1000 == 0:
                        producer.poll(0)
                producer.flush(10)
                seq += 1
                time.sleep(max(0.0, 1.0 - (time.time() - tick)))

        thread = threading.Thread(target=produce, daemon=True)
        thread.start()
        client = redis.Redis.from_url(settings.redis)
        emissions: set[tuple[int, int, int]] = set()
        staleness: list[float] = []
        # The warm-up starts once the flow has written its first program aggregate: on a busy machine,
        # start-up alone (a process, 10,000 ancestries) can take longer than a fixed warm-up.
        started_by = time.time() + 180
        while not client.exists("node:program-0") and time.time() < started_by and flow.poll() is None:
            time.sleep(0.2)
        warmup_until = time.time() + 10
        end = warmup_until + duration_s
        try:
            while time.time() < end:
                for program in range(PROGRAMS):
                    event_ms, written_ms = client.hmget(f"node:program-{program}", "event_time", "updated_at")
                    if event_ms is not None and written_ms is not None and time.time() > warmup_until:
                        emissions.add((program, int(event_ms), int(written_ms)))
                        staleness.append(time.time() - int(event_ms) / 1000)
                time.sleep(0.05)
        finally:
            stop.set()
            thread.join(10)
            flow.terminate()
            flow.wait(30)
            client.close()
    if not emissions:
        raise RuntimeError("no aggregate of a program node appeared in Redis")
    latencies = sorted((written - event) / 1000 for _, event, written in emissions)
    staleness.sort()
    return {"freshness_p50_s": statistics.median(latencies),
            "freshness_p99_s": latencies[max(0, int(len(latencies) * 0.99) - 1)],
            "freshness_emissions": float(len(latencies)),
            "staleness_p50_s": statistics.median(staleness),
            "staleness_p99_s": staleness[max(0, int(len(staleness) * 0.99) - 1)]}


def _state_bytes_per_site(sites: int) -> dict[str, float]:
    """Pickled shards (the recovery snapshot) after a minute and a half of readings, per site, and the
    shard's own rate: readings through apply and tick per CPU-second of this process."""
    settings = Settings()
    config = shard_config(settings)
    shards = {n: Shard(n, config) for n in range(settings.telemetry_shards)}
    at = datetime(2026, 1, 1, tzinfo=UTC)
    start_ms = int(at.timestamp() * 1000)
    wall = start_ms + 90_000  # the wall clock of a live run: the readings are not from the future
    for i in range(sites):
        record = _ancestry(i, at)
        shards[bucket_of(str(record["site_id"]), len(shards))].apply([], [record], wall_ms=wall)
    rng = random.Random(2)
    cpu = 0.0
    for second in range(90):
        per: dict[int, list[tuple[str, Reading]]] = {}
        for i in range(sites):
            site = f"site-{i:06d}"
            reading = Reading(start_ms + second * 1000, second, rng.uniform(20, 100), rng.uniform(-5, 5), 1.0,
                              1.0, 0.0, 25.0, "SELF_CONSUMPTION", None)
            per.setdefault(bucket_of(site, len(shards)), []).append((site, reading))
        started = time.process_time()
        for n, readings in per.items():
            shards[n].apply(readings, [], wall_ms=wall)
        if second % 5 == 4:  # the catch-up cadence: a tick every 5 s of input
            for shard in shards.values():
                shard.tick(wall)
        cpu += time.process_time() - started
    states = [s.state() for s in shards.values()]  # what the recovery store keeps
    size = sum(len(shard_snapshot(state)) for state in states)
    return {"state_bytes_per_site": size / sites, "shard_readings_per_cpu_s": sites * 90 / cpu}


def run(quick: bool) -> dict[str, float]:
    """Measure and return the figures (quick: fewer messages, a shorter freshness window)."""
    sites = 10_000
    # Three minutes: with one minute (600,000 messages) a two-process run's net time was about 2 s
    # against 3 s of start-up subtracted, so the start-up's spread swamped the rate.
    figures = _throughput(sites, seconds=10 if quick else 180, repeats=1 if quick else 3)
    figures.update(_freshness(sites, duration_s=10 if quick else 60))
    figures.update(_state_bytes_per_site(2_000 if quick else sites))
    figures["sites"] = float(sites)
    return figures
