"""`vpp bench soak`: the whole local system at 1,000 sites for an hour; does any part's memory grow?

Everything ``vpp up`` starts (broker, Redis, history server, the four
dataflows, the bidding worker and scheduler, gateway, API, simulated market,
forecast service, simulator) runs on a private stack (its own data directory
and free ports). Once every region node reports all its sites, and after a
warm-up (the telemetry flow's backfill horizon plus 2 minutes, 17 by default: its
state fills that long by design), each part's resident set size is sampled every minute for
``minutes`` (60). Alongside each sample: coverage and the freshness of the
region aggregates (a backlog on an overloaded machine shows there, and is not
mistaken for a leak), the telemetry dataflow's lag (``telemetry.raw`` end
minus the offsets its consumer group committed), the load average, and the
records on every topic with their mean size, so the broker's growth can be
set against the bytes written to it (the memory-only local broker keeps
every record: docs/architecture.md, Topics).

Figures per part: ``rss_mb_<part>`` (after warm-up), ``rss_growth_pct_<part>``
(last sample over first), ``rss_mb_per_h_<part>`` (least-squares slope over
every sample), ``rss_mb_per_h_late_<part>`` (over the second half: a step
during a backlog, which CPython's allocator keeps as its high-water mark, is
not a leak; a steady slope is) and ``flat_<part>`` (1 when within ``FLAT_PCT``), or
``exited_<part>`` for a part that was gone at the end; then
``broker_written_mb_per_h`` (records times their mean size, per hour),
``coverage_min_pct``, ``freshness_max_s``, ``telemetry_lag_max``,
``load_avg_max``. Every sample is written to ``bench/results/soak-samples.json``.
``VPP_BENCH_SOAK_MINUTES``, ``VPP_BENCH_SOAK_SITES`` and
``VPP_BENCH_SOAK_WARMUP_MINUTES`` override the defaults.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import redis
from confluent_kafka import Consumer, TopicPartition

from assets.generator import generate_fleet
from assets.loader import load_fleet
from bench.chaos import rss_kb
from bench.local import free_port, private_settings
from bench.results import RESULTS_DIR
from core.config import Settings
from core.kafka import client_config
from core.live import aggregate_hashes
from core.topics import TELEMETRY_DATAFLOW_GROUP, TELEMETRY_RAW, TOPICS
from edge_gateway.sim_transports import raise_fd_limit
from vpp.services import Services
from vpp.stack import Stack

#: A part is flat when its last sample is within this many % of its first (issue 19).
FLAT_PCT = 10.0
#: The infrastructure's parts, named as the stack's pid files name them.
STACK_PARTS = ("broker", "redis", "history")
#: Records read from the end of each topic to estimate its mean record size.
SIZE_SAMPLE = 200


@dataclass
class Sample:
    """One minute of the soak: every part's RSS and what the platform was doing."""

    elapsed_s: float
    rss_kb: dict[str, int]
    coverage: float
    freshness_s: float
    telemetry_lag: int
    load_avg: float
    #: Records on each topic (sum over its partitions of the high watermark).
    records: dict[str, int] = field(default_factory=dict)


def system_settings(data_dir: Path) -> Settings:
    """A private stack's settings with every service's port free too, so ``vpp up`` parts cannot collide."""
    return private_settings(data_dir).model_copy(update={
        "gateway_port": free_port(), "gateway_metrics_port": free_port(), "api_port": free_port(),
        "telemetry_metrics_port": free_port(), "control_metrics_port": free_port(),
        "telemetry_probe_port": free_port(), "control_probe_port": free_port(),
        "plans_probe_port": free_port(), "bidding_probe_port": free_port()})


@contextmanager
def whole_system(settings: Settings, sites: int) -> Iterator[Services]:
    """The stack, a generated fleet of ``sites`` and every service, as ``vpp up``; all stopped after."""
    stack = Stack(settings)
    stack.up()
    services = Services(settings, simulated_sites=sites)
    try:
        now = datetime.now(UTC)
        load_fleet(settings, generate_fleet(now, sites, 0), now, int(now.timestamp() * 1000), lambda _: None)
        services.up()
        yield services
    finally:
        services.down()
        stack.down()


class Probe:
    """What the soak reads from a running system: pids, coverage, freshness, lag, topic sizes."""

    def __init__(self, settings: Settings, services: Services) -> None:
        self.settings = settings
        self.services = services
        self.stack = Stack(settings)
        self.redis = redis.Redis.from_url(settings.redis, socket_timeout=5, decode_responses=True)
        self.consumer = Consumer(client_config(settings, **{
            "group.id": TELEMETRY_DATAFLOW_GROUP, "enable.auto.commit": False}))

    def close(self) -> None:
        self.consumer.close()
        self.redis.close()

    def pids(self) -> dict[str, int]:
        """Every running part's pid, by part name."""
        pids: dict[str, int] = {}
        for name, files in [(n, self.stack.pids) for n in STACK_PARTS] + [
                (m.name, self.services.pids) for m in self.services.services()]:
            record = files.running(name)
            if record is not None:
                pids[name] = record.pid
        return pids

    def coverage_and_freshness(self) -> tuple[float, float]:
        """Reporting over expected sites of the region nodes, and the oldest region aggregate's age (s)
        behind the newest reading it includes (write time minus event time)."""
        regions = [h for h in aggregate_hashes(self.redis).values() if h.get("node_kind") == "region"]
        expected = sum(int(h.get("expected_sites", 0)) for h in regions)
        reporting = sum(int(h.get("reporting_sites", 0)) for h in regions)
        now_ms = time.time() * 1000
        ages = [(now_ms - float(h.get("event_time", 0))) / 1000 for h in regions]
        return (reporting / expected if expected else 0.0), max(ages, default=float("nan"))

    def watermarks(self) -> dict[str, list[tuple[int, int]]]:
        """(low, high) offsets of every partition of every topic."""
        metadata = self.consumer.list_topics(timeout=10).topics
        return {spec.name: [self.consumer.get_watermark_offsets(TopicPartition(spec.name, p), timeout=10)
                            for p in sorted(metadata[spec.name].partitions)]
                for spec in TOPICS if spec.name in metadata}

    def telemetry_lag(self, partitions: int) -> int:
        """Records on ``telemetry.raw`` past what the telemetry dataflow committed (-1: nothing committed).

        The committed offsets are read before the ends: read after, they may pass ends read earlier.
        """
        committed = self.consumer.committed([TopicPartition(TELEMETRY_RAW, p) for p in range(partitions)],
                                            timeout=10)
        if all(tp.offset < 0 for tp in committed):
            return -1
        ends = [self.consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in committed]
        return sum(max(0, high - max(tp.offset, 0)) for high, tp in zip(ends, committed, strict=True))

    def mean_record_bytes(self, marks: dict[str, list[tuple[int, int]]]) -> dict[str, float]:
        """Mean key plus value size of the last records of each topic (topics with none left out)."""
        sizes: dict[str, float] = {}
        for topic, partitions in marks.items():
            total = count = 0
            for partition, (low, high) in enumerate(partitions):
                start = max(low, high - SIZE_SAMPLE // len(partitions) - 1)
                if high <= start:
                    continue
                self.consumer.assign([TopicPartition(topic, partition, start)])
                deadline = time.monotonic() + 10
                while start < high and time.monotonic() < deadline:
                    message = self.consumer.poll(1.0)
                    if message is None or message.error():
                        continue
                    total += len(message.key() or b"") + len(message.value() or b"")
                    count += 1
                    start = (message.offset() or start) + 1
            if count:
                sizes[topic] = total / count
        self.consumer.unassign()
        return sizes

    def sample(self, elapsed_s: float, pids: dict[str, int]) -> Sample:
        coverage, freshness = self.coverage_and_freshness()
        marks = self.watermarks()
        lag = self.telemetry_lag(len(marks.get(TELEMETRY_RAW, [])))
        rss = {name: kb for name, pid in pids.items() if (kb := rss_kb(pid)) is not None}
        return Sample(elapsed_s, rss, coverage, freshness, lag, os.getloadavg()[0],
                      {topic: sum(high for _, high in parts) for topic, parts in marks.items()})


def slope_per_h(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ``ys`` over ``xs`` (seconds), per hour; 0 for fewer than two points."""
    n = len(xs)
    if n < 2:
        return 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    var = sum((x - mx) ** 2 for x in xs)
    return 3600 * sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var if var else 0.0


def figures_of(samples: list[Sample], record_bytes: dict[str, float]) -> dict[str, float]:
    """The flat figures of the soak (module docstring)."""
    figures: dict[str, float] = {"samples": float(len(samples)), "flat_pct": FLAT_PCT}
    if not samples:
        return figures
    first, last = samples[0], samples[-1]
    hours = (last.elapsed_s - first.elapsed_s) / 3600
    figures["soak_minutes"] = round(60 * hours, 1)
    for part, before in sorted(first.rss_kb.items()):
        points = [(s.elapsed_s, s.rss_kb[part] / 1024) for s in samples if part in s.rss_kb]
        after = last.rss_kb.get(part)
        if after is None:  # it exited during the soak: its log says why
            figures[f"exited_{part}"] = 1.0
            continue
        growth = 100.0 * (after - before) / before
        figures[f"rss_mb_{part}"] = round(before / 1024, 1)
        figures[f"rss_growth_pct_{part}"] = round(growth, 1)
        slope = slope_per_h([x for x, _ in points], [y for _, y in points])
        late = points[len(points) // 2:]
        late_slope = slope_per_h([x for x, _ in late], [y for _, y in late])
        figures[f"rss_mb_per_h_{part}"] = round(slope, 1)
        figures[f"rss_mb_per_h_late_{part}"] = round(late_slope, 1)
        figures[f"flat_{part}"] = float(abs(growth) <= FLAT_PCT)
    written = sum((last.records.get(topic, 0) - first.records.get(topic, 0)) * size
                  for topic, size in record_bytes.items())
    if hours > 0:
        figures["broker_written_mb_per_h"] = round(written / 2**20 / hours, 2)
        figures["telemetry_records_per_h"] = round(
            (last.records.get(TELEMETRY_RAW, 0) - first.records.get(TELEMETRY_RAW, 0)) / hours)
    for topic, size in sorted(record_bytes.items()):
        figures[f"record_bytes_{topic}"] = round(size, 1)
    figures["coverage_min_pct"] = round(100 * min(s.coverage for s in samples), 2)
    figures["freshness_max_s"] = round(max(s.freshness_s for s in samples), 1)
    figures["telemetry_lag_max"] = float(max(s.telemetry_lag for s in samples))
    figures["load_avg_max"] = round(max(s.load_avg for s in samples), 1)
    figures["load_avg_mean"] = round(sum(s.load_avg for s in samples) / len(samples), 1)
    return figures


def _report(sample: Sample, minute: int, minutes: int) -> None:
    """One line per sample on stderr, so an hour-long soak shows it is alive and how it is doing."""
    largest = sorted(sample.rss_kb.items(), key=lambda item: -item[1])[:4]
    rss = ", ".join(f"{name} {kb / 1024:.0f} MB" for name, kb in largest)
    print(f"soak minute {minute}/{minutes}: coverage {100 * sample.coverage:.1f}%, freshness "
          f"{sample.freshness_s:.1f} s, lag {sample.telemetry_lag}, load {sample.load_avg:.1f}; {rss}",
          file=sys.stderr, flush=True)


def soak(settings: Settings, sites: int, minutes: float, warmup_minutes: float,
         log: Path | None = None) -> dict[str, float]:
    """Run the whole system at ``sites`` on ``settings`` (a private stack not yet up); the figures."""
    samples: list[Sample] = []
    with whole_system(settings, sites) as services:
        probe = Probe(settings, services)
        try:
            started = time.monotonic()
            deadline = started + 300 + sites / 10
            while probe.coverage_and_freshness()[0] < 1.0 and time.monotonic() < deadline:
                time.sleep(2)
            print(f"soak: {sites} sites up; warming up for {warmup_minutes:g} min, then {minutes:g} min of "
                  "samples", file=sys.stderr, flush=True)
            time.sleep(60 * warmup_minutes)
            pids = probe.pids()
            begun = time.monotonic()
            for minute in range(int(minutes) + 1):
                time.sleep(max(0.0, begun + 60 * minute - time.monotonic()))
                samples.append(probe.sample(time.monotonic() - begun, pids))
                _report(samples[-1], minute, int(minutes))
                if log is not None:
                    log.write_text(json.dumps([asdict(s) for s in samples], indent=1) + "\n")
            record_bytes = probe.mean_record_bytes(probe.watermarks())
        finally:
            probe.close()
    figures = figures_of(samples, record_bytes)
    figures.update(sites=float(sites), warmup_minutes=warmup_minutes)
    return figures


def run(quick: bool) -> dict[str, float]:
    """The soak on a private stack; figures as in the module docstring."""
    minutes = float(os.environ.get("VPP_BENCH_SOAK_MINUTES", "2" if quick else "60"))
    sites = int(os.environ.get("VPP_BENCH_SOAK_SITES", "200" if quick else "1000"))
    raise_fd_limit()
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="vpp-bench-soak-") as directory:
        settings = system_settings(Path(directory))
        # The telemetry flow keeps node minutes for the backfill horizon (15 min): until that has filled,
        # its state grows by design, so a full run warms up past it.
        full_warmup = max(5.0, settings.backfill_horizon_s / 60 + 2)
        warmup = float(os.environ.get("VPP_BENCH_SOAK_WARMUP_MINUTES", 1 if quick else full_warmup))
        return soak(settings, sites, minutes, warmup, RESULTS_DIR / "soak-samples.json")
