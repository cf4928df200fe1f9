"""A benchmark's own local stack: a private data directory and free ports, so nothing collides."""

from __future__ import annotations

import os
import socket
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from confluent_kafka import Consumer
from prometheus_client.parser import text_string_to_metric_families

from core.config import Settings
from core.kafka import client_config
from edge_gateway.feeds import start_at_end_unless_committed
from vpp.stack import running


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def private_settings(data_dir: Path) -> Settings:
    """A stack under ``data_dir`` that cannot collide with `vpp up` or another benchmark."""
    return Settings(data_dir=data_dir, kafka_port=free_port(), redis_port=free_port(),
                    clickhouse_port=free_port(), kafka_bootstrap=None, redis_url=None, clickhouse_url=None)


@contextmanager
def private_stack(prefix: str, settings: Settings | None = None) -> Iterator[Settings]:
    """``settings`` of a stack already running (a test's), or a private stack for the block's duration."""
    if settings is not None:
        yield settings
        return
    with (tempfile.TemporaryDirectory(prefix=prefix) as directory,
          running(private_settings(Path(directory))) as own):
        yield own


def tail_consumer(settings: Settings, topics: list[str], group_id: str, **extra: object) -> Consumer:
    """A consumer already assigned and positioned at the end of ``topics``: it sees what comes next.

    Positions are fixed at the end as of the assignment; "latest" alone is resolved at the first
    fetch and would skip what is produced in between.
    """
    consumer = Consumer(client_config(settings, **{
        "group.id": group_id, "auto.offset.reset": "latest", "session.timeout.ms": 10_000,
        "heartbeat.interval.ms": 1_000, **extra}))
    consumer.subscribe(topics, on_assign=start_at_end_unless_committed)
    deadline = time.monotonic() + 30
    while not consumer.assignment() and time.monotonic() < deadline:
        consumer.poll(0.2)
    return consumer


def gateway_telemetry_frames(host: str, metrics_port: int) -> float:
    """Telemetry frames a gateway has taken so far (its ``vpp_gateway_frames_in_total``)."""
    # A flooded gateway on a loaded machine answers late.
    with urllib.request.urlopen(f"http://{host}:{metrics_port}/metrics", timeout=60) as response:
        text = response.read().decode()
    return sum(sample.value for family in text_string_to_metric_families(text)
               for sample in family.samples
               if sample.name == "vpp_gateway_frames_in_total" and sample.labels.get("kind") == "telemetry")


def process_cpu_s(pid: int) -> float:
    """User plus system CPU time a live process has used so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
