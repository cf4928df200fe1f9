"""What the local broker's CPU scales with: records, produce requests, fetch requests or bytes.

A private Tansu (memory storage, as `vpp up` starts it) on a free port gets the
telemetry volume of a fleet (``rate`` SiteTelemetry records a second, keyed by
site over the topic's partitions, produced in small slices as a gateway does
while frames arrive) and is read by one assign-mode consumer per partition, as
the dataflows' Kafka source reads it. Each variant changes the producer's or the
consumers' librdkafka settings; the broker's CPU over the window comes from
``/proc``, and the clients' own statistics count the produce and fetch requests
they sent. Every variant runs on a fresh broker, and the variants alternate over
``rounds`` so a drift in the machine's load falls on all of them.

    PYTHONPATH=. python -m bench.broker_load [rate] [window_s] [rounds]

prints a line per run and writes ``bench/results/broker_load.json`` (per variant:
the median of its rounds).

What it showed (Tansu 0.6, 10,000 records/s, December 2026): the broker's CPU
goes with produce requests, and grows with the batches a partition holds. Its
memory storage keeps each produced batch as an object of its own and lists
every object of a partition on each fetch that has something to return, so at
a 5 ms linger (~400 produce requests/s, ~1,600 batches/s) the broker used 0.17
cores in its first 30 s and 0.68 after 4.5 minutes (and fell behind), against
0.05 -> 0.12 at 50 ms and 0.03 -> 0.07 at 100 ms. A fetch is answered after
sleeping half of ``fetch.wait.max.ms`` (all of it below 250 ms) whatever it
found, so a shorter wait means more fetches and more listing (100 ms: 83
fetches/s and 1.8x the broker CPU of the default 500); ``fetch.min.bytes``
makes the broker fetch again until the bytes are there; one consumer for all
partitions saves fetch requests, not broker CPU. lz4 costs the broker nothing
measurable.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from bench.local import free_port, process_cpu_s
from bench.results import write_result
from schemas import packaged_codec
from vpp.stack import _broker_binary

TOPIC = "telemetry.raw"
PARTITIONS = 4
SLICE_S = 0.01


@dataclass(frozen=True)
class Variant:
    """One combination of producer and consumer settings (librdkafka names)."""

    name: str
    producer: dict[str, Any] = field(default_factory=dict)
    consumer: dict[str, Any] = field(default_factory=dict)
    #: Consumers per partition's worth: False reads all partitions through one consumer.
    consumer_per_partition: bool = True


#: The gateway as it stands (linger 5 ms, lz4) and the flows' consumers as they stand (librdkafka
#: defaults: fetch.min.bytes 1, fetch.wait.max.ms 500), then one change at a time.
LZ4 = {"compression.type": "lz4"}
VARIANTS = (
    Variant("linger5", {"linger.ms": 5, **LZ4}),
    Variant("linger5-plain", {"linger.ms": 5, "compression.type": "none"}),
    Variant("linger20", {"linger.ms": 20, **LZ4}),
    Variant("linger50", {"linger.ms": 50, **LZ4}),
    Variant("linger100", {"linger.ms": 100, **LZ4}),
    Variant("linger5-wait100", {"linger.ms": 5, **LZ4}, {"fetch.wait.max.ms": 100}),
    Variant("linger100-wait100", {"linger.ms": 100, **LZ4}, {"fetch.wait.max.ms": 100}),
    Variant("linger5-wait1000", {"linger.ms": 5, **LZ4}, {"fetch.wait.max.ms": 1000}),
    Variant("linger5-minbytes", {"linger.ms": 5, **LZ4}, {"fetch.min.bytes": 100_000}),
    Variant("linger5-one-consumer", {"linger.ms": 5, **LZ4}, consumer_per_partition=False),
)


def values(count: int, seed: int = 1) -> list[tuple[bytes, bytes]]:
    """``count`` (key, SiteTelemetry value) pairs of as many sites, with plausible varied readings."""
    codec, rnd = packaged_codec(), random.Random(seed)
    now = datetime.now(UTC)
    pairs = []
    for i in range(count):
        site = f"site-{i:06d}"
        record = {"site_id": site, "seq": rnd.randrange(1_000_000), "event_time": now,
                  "received_time": now, "soc_pct": rnd.uniform(10, 90), "battery_kw": rnd.uniform(-3, 3),
                  "solar_kw": rnd.uniform(0, 4), "load_kw": rnd.uniform(0, 2), "grid_kw": rnd.uniform(-2, 2),
                  "battery_temp_c": 25.0, "active_command_id": None, "mode": "SELF_CONSUMPTION",
                  "firmware": "vpp-sim/1.0"}
        pairs.append((site.encode(), codec.encode("SiteTelemetry", record)))
    return pairs


@contextmanager
def broker() -> Iterator[tuple[int, str]]:
    """A private memory-only Tansu with the telemetry topic: (pid, bootstrap)."""
    port = free_port()
    address = f"127.0.0.1:{port}"
    process = subprocess.Popen([_broker_binary(), "broker", "--listener-url", f"tcp://{address}",
                                "--advertised-listener-url", f"tcp://{address}", "--storage-engine",
                                "memory://tansu/"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        admin = AdminClient({"bootstrap.servers": address})
        deadline = time.monotonic() + 30
        while True:
            try:
                admin.create_topics([NewTopic(TOPIC, PARTITIONS, 1)])[TOPIC].result(10)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield process.pid, address
    finally:
        process.terminate()
        process.wait(10)


class Requests:
    """Requests by type a client sent, from its librdkafka statistics (the latest report)."""

    def __init__(self) -> None:
        self.latest: dict[str, int] = {}

    def __call__(self, stats: str) -> None:
        counts: dict[str, int] = {}
        for broker_stats in json.loads(stats)["brokers"].values():
            for request, n in broker_stats.get("req", {}).items():
                counts[request] = counts.get(request, 0) + n
        self.latest = counts


def run(variant: Variant, rate: int, window_s: float, pairs: list[tuple[bytes, bytes]]) -> dict[str, float]:
    """The broker's CPU and the clients' requests over ``window_s`` at ``rate`` records a second."""
    with broker() as (pid, address):
        stop = threading.Event()
        produced_requests, fetch_requests = Requests(), [Requests() for _ in range(PARTITIONS)]
        consumed = [0] * PARTITIONS
        producer = Producer({"bootstrap.servers": address, "statistics.interval.ms": 1000,
                             "stats_cb": produced_requests, **variant.producer})

        def produce() -> None:
            per_slice, at, k = max(1, int(rate * SLICE_S)), time.monotonic(), 0
            while not stop.is_set():
                for _ in range(per_slice):
                    key, value = pairs[k % len(pairs)]
                    k += 1
                    while True:
                        try:
                            producer.produce(TOPIC, value, key)
                            break
                        except BufferError:
                            producer.poll(0.01)
                producer.poll(0)
                at += SLICE_S
                time.sleep(max(0.0, at - time.monotonic()))
            producer.flush(10)

        def consume(index: int, partitions: list[int]) -> None:
            consumer = Consumer({"bootstrap.servers": address, "group.id": f"bench-{index}",
                                 "enable.auto.commit": False, "statistics.interval.ms": 1000,
                                 "stats_cb": fetch_requests[index], **variant.consumer})
            consumer.assign([TopicPartition(TOPIC, p, 0) for p in partitions])
            while not stop.is_set():
                consumed[index] += len(consumer.consume(10_000, 0.001))
            consumer.close()

        every = list(range(PARTITIONS))
        groups = [[p] for p in every] if variant.consumer_per_partition else [every]
        threads = [threading.Thread(target=produce)] + [
            threading.Thread(target=consume, args=(i, g)) for i, g in enumerate(groups)]
        for thread in threads:
            thread.start()
        time.sleep(3)  # connections up, the first batches through
        cpu0, wall0 = process_cpu_s(pid), time.monotonic()
        own0 = time.process_time()
        p0 = dict(produced_requests.latest)
        f0 = [dict(r.latest) for r in fetch_requests]
        n0 = sum(consumed)
        time.sleep(window_s * 3 / 4)
        cpu_late, wall_late = process_cpu_s(pid), time.monotonic()
        time.sleep(window_s / 4)
        cpu1, wall1 = process_cpu_s(pid), time.monotonic()
        own1 = time.process_time()
        p1 = dict(produced_requests.latest)
        f1 = [dict(r.latest) for r in fetch_requests]
        n1 = sum(consumed)
        stop.set()
        for thread in threads:
            thread.join()
    wall = wall1 - wall0
    fetches = sum(b.get("Fetch", 0) - a.get("Fetch", 0) for a, b in zip(f0, f1, strict=True))
    return {"broker_cores": (cpu1 - cpu0) / wall,
            "broker_cores_last_quarter": (cpu1 - cpu_late) / (wall1 - wall_late),
            "clients_cores": (own1 - own0) / wall,
            "consumed_per_s": (n1 - n0) / wall,
            "produce_req_per_s": (p1.get("Produce", 0) - p0.get("Produce", 0)) / wall,
            "fetch_req_per_s": fetches / wall}


def main(argv: list[str]) -> dict[str, float]:
    rate = int(argv[0]) if argv else 10_000
    window_s = float(argv[1]) if len(argv) > 1 else 15.0
    rounds = int(argv[2]) if len(argv) > 2 else 2
    only = os.environ.get("VPP_BENCH_BROKER_VARIANTS")
    variants = [v for v in VARIANTS if not only or v.name in only.split(",")]
    pairs = values(min(rate, 10_000))
    by_variant: dict[str, list[dict[str, float]]] = {v.name: [] for v in variants}
    for round_ in range(rounds):
        for variant in variants if round_ % 2 == 0 else reversed(variants):
            result = run(variant, rate, window_s, pairs)
            by_variant[variant.name].append(result)
            print(f"{variant.name:18} " + " ".join(f"{k} {v:8.3f}" for k, v in result.items())
                  + f"  load {os.getloadavg()[0]:.1f}", flush=True)
    figures: dict[str, float] = {"rate": rate, "window_s": window_s, "rounds": rounds}
    for name, results in by_variant.items():
        for key in results[0]:
            figures[f"{key}_{name}"] = statistics.median(r[key] for r in results)
    write_result("broker_load", figures, quick=False)
    return figures


if __name__ == "__main__":
    main(sys.argv[1:])
