"""``vpp bench gateway``: many concurrent device connections through one gateway process into Kafka.

The gateway runs as its own process (``python -m edge_gateway``) so its CPU
time can be read from /proc and its core is not shared with the load
generator, which holds every device connection in this process. Two phases:
every device at 1 Hz (the design's load; latency from the device's event time
to the record's arrival on ``telemetry.raw``), then every device sending as
fast as it can (throughput, and frames per gateway CPU-second). Baseline in
the same run: the gateway's per-frame work alone (Avro decode, validate,
stamp, encode) without sockets or Kafka, which bounds what one core can do.

The flood phase writes each device's frame, framed and masked once, straight to
its connection's transport (one write per frame, as a device sends them), not
through the client library: on a loaded 2-core machine the library's framing
for 500 connections in one process starves long before the gateway does, and
the figure would measure the load generator.

A private local stack is started in a temporary directory unless settings
are passed in (the tests pass the session stack's).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from websockets.asyncio.client import ClientConnection, connect
from websockets.frames import Frame, Opcode
from websockets.typing import Subprotocol

from bench.local import free_port, gateway_telemetry_frames, private_stack, process_cpu_s
from core import kafka
from core.config import Settings
from core.device_tokens import issue_token
from core.topics import TELEMETRY_RAW
from edge_gateway.feeds import next_batch
from edge_gateway.frames import parse_frame
from edge_gateway.sim_transports import raise_fd_limit
from edge_gateway.wire import AVRO_SUBPROTOCOL
from schemas import packaged_codec

CODEC = packaged_codec()
CONNECT_CONCURRENCY = 100
#: The flood phase waits while a connection has this many bytes not yet taken by the socket.
FLOOD_BUFFER_BYTES = 64 * 1024


def run(quick: bool) -> dict[str, float]:
    """Measure and return the figures (quick: 500 connections, short phases)."""
    return measure(connections=500 if quick else 2000, phase_s=5.0 if quick else 20.0)


def measure(connections: int, phase_s: float, settings: Settings | None = None) -> dict[str, float]:
    """Run both phases with ``connections`` devices for ``phase_s`` seconds each."""
    raise_fd_limit()
    with (private_stack("vpp-bench-gateway-", settings) as stack_settings,
          _gateway_process(stack_settings) as (port, metrics_port, pid)):
        tail = _LatencyTail(stack_settings)
        try:
            figures = asyncio.run(_drive(stack_settings, port, metrics_port, pid, connections, phase_s, tail))
        finally:
            tail.stop()
    figures["baseline_parse_frames_per_s"] = _baseline_parse_rate()
    return figures


@contextlib.contextmanager
def _gateway_process(settings: Settings) -> Iterator[tuple[int, int, int]]:
    """A gateway subprocess with no practical rate limit; yields (port, metrics port, pid)."""
    port, metrics_port = free_port(), free_port()
    log = (settings.data_dir / "bench-gateway.log").open("wb")
    env = {**os.environ, "VPP_KAFKA_BOOTSTRAP": settings.kafka, "VPP_REDIS_URL": settings.redis,
           "VPP_CLICKHOUSE_URL": settings.clickhouse, "VPP_CLICKHOUSE_DATABASE": settings.clickhouse_database,
           "VPP_GATEWAY_RATE_PER_S": "1000000", "VPP_GATEWAY_RATE_BURST": "1000000",
           # External services make the process non-local: it needs its secret set (the stack's own).
           "VPP_GATEWAY_TOKEN_SECRET": settings.gateway_keys().current,
           "VPP_CLICKHOUSE_PASSWORD": (settings.clickhouse_credentials() or ("", ""))[1],
           "VPP_GATEWAY_CONSUMER_GROUP": f"bench-{os.getpid()}"}
    process = subprocess.Popen(
        [sys.executable, "-m", "edge_gateway", "--host", "127.0.0.1", "--port", str(port),
         "--metrics-port", str(metrics_port), "--instance-id", "bench"],
        env=env, stdout=subprocess.DEVNULL, stderr=log)
    try:
        deadline = time.monotonic() + 60
        while not _healthy(metrics_port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the gateway process did not become healthy")
            time.sleep(0.2)
        yield port, metrics_port, process.pid
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def _healthy(metrics_port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/healthz", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


class _LatencyTail:
    """Reads telemetry.raw in a thread; notes (event time, arrival) of every record, in epoch seconds."""

    def __init__(self, settings: Settings) -> None:
        self.samples: list[tuple[float, float]] = []
        self._consumer = Consumer(kafka.client_config(
            settings, **{"group.id": f"bench-tail-{os.getpid()}", "enable.auto.commit": False,
                         "fetch.wait.max.ms": 5}))
        partitions = self._consumer.list_topics(TELEMETRY_RAW, timeout=10).topics[TELEMETRY_RAW].partitions
        starts = [TopicPartition(TELEMETRY_RAW, p,
                                 self._consumer.get_watermark_offsets(TopicPartition(TELEMETRY_RAW, p))[1])
                  for p in partitions]
        self._consumer.assign(starts)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            for message in next_batch(self._consumer, 1000, 0.1):
                value = message.value()
                if message.error() is None and value is not None:
                    arrived = time.time()
                    self.samples.append((CODEC.decode(value)["event_time"].timestamp(), arrived))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._consumer.close()


def _telemetry(site_id: str, seq: int) -> bytes:
    return CODEC.encode("SiteTelemetry", {
        "site_id": site_id, "seq": seq, "event_time": datetime.now(UTC), "received_time": None,
        "soc_pct": 50.0, "battery_kw": 1.0, "solar_kw": 2.0, "load_kw": 0.7, "grid_kw": -2.3,
        "battery_temp_c": 24.0, "mode": "SELF_CONSUMPTION", "active_command_id": None, "firmware": "bench"})


async def _open(settings: Settings, port: int, count: int) -> list[tuple[str, ClientConnection]]:
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def one(i: int) -> tuple[str, ClientConnection]:
        site_id = f"bench-{i:05d}"
        headers = {"Authorization": f"Bearer {issue_token(settings, site_id).token}"}
        async with gate:
            ws = await connect(f"ws://127.0.0.1:{port}/", additional_headers=headers, open_timeout=60,
                               subprotocols=[Subprotocol(AVRO_SUBPROTOCOL)], ping_interval=None,
                               compression=None)  # as the simulator's devices
        return site_id, ws

    return list(await asyncio.gather(*(one(i) for i in range(count))))


async def _paced(site_id: str, ws: ClientConnection, offset_s: float, until: float) -> None:
    """One frame a second, fresh event time each, starting ``offset_s`` into the second."""
    loop = asyncio.get_running_loop()
    next_at, seq = loop.time() + offset_s, 0
    while next_at < until:
        await asyncio.sleep(max(0.0, next_at - loop.time()))
        seq += 1
        await ws.send(_telemetry(site_id, seq))
        next_at += 1.0


async def _flat_out(ws: ClientConnection, frame: bytes, until: float) -> None:
    """Send ``frame`` as fast as the gateway takes it: 20 writes of the ready-made WebSocket frame
    a turn, pausing while the socket's send buffer is full."""
    loop, transport = asyncio.get_running_loop(), ws.transport
    wire = Frame(Opcode.BINARY, frame).serialize(mask=True)
    while loop.time() < until and not transport.is_closing():
        if transport.get_write_buffer_size() > FLOOD_BUFFER_BYTES:
            await asyncio.sleep(0.001)
            continue
        for _ in range(20):
            transport.write(wire)
        await asyncio.sleep(0)


async def _phase(metrics_port: int, pid: int, phase_s: float,
                 tasks: Callable[[float], list[Any]]) -> tuple[float, float, float, float]:
    """Run ``tasks(until)`` for ``phase_s`` seconds, then a second for the last frames; (frames,
    gateway CPU seconds, wall start, end). The phase starts after the first reading of the
    gateway's figures (which blocks, for long on a loaded machine), not before it."""
    host = "127.0.0.1"
    frames0, cpu0, wall0 = gateway_telemetry_frames(host, metrics_port), process_cpu_s(pid), time.time()
    await asyncio.gather(*tasks(asyncio.get_running_loop().time() + phase_s))
    await asyncio.sleep(1.0)
    frames = gateway_telemetry_frames(host, metrics_port) - frames0
    return frames, process_cpu_s(pid) - cpu0, wall0, time.time()


def _percentile(values: list[float], q: float) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=1000, method="inclusive")[min(998, int(q * 1000) - 1)]


async def _drive(settings: Settings, port: int, metrics_port: int, pid: int, connections: int,
                 phase_s: float, tail: _LatencyTail) -> dict[str, float]:
    devices = await _open(settings, port, connections)
    try:
        frames_1hz, cpu_1hz, start_1hz, end_1hz = await _phase(metrics_port, pid, phase_s, lambda until: [
            _paced(site, ws, i / connections, until) for i, (site, ws) in enumerate(devices)])
        latencies = [(arrived - sent) * 1000 for sent, arrived in list(tail.samples)
                     if start_1hz <= sent <= end_1hz]
        frames = [_telemetry(site, 1) for site, _ in devices]
        frames_max, cpu_max, _, _ = await _phase(metrics_port, pid, phase_s, lambda until: [
            _flat_out(ws, frame, until) for (_, ws), frame in zip(devices, frames, strict=True)])
    finally:
        await asyncio.gather(*(ws.close() for _, ws in devices), return_exceptions=True)
    return {
        "connections": float(connections),
        "frames_per_s": frames_max / phase_s,
        "frames_per_s_per_core": frames_max / cpu_max if cpu_max > 0 else float("nan"),
        "latency_p50_ms": _percentile(latencies, 0.5),
        "latency_p99_ms": _percentile(latencies, 0.99),
        "frames_per_s_1hz": frames_1hz / phase_s,
        "gateway_cpu_pct_1hz": 100.0 * cpu_1hz / phase_s,
        "gateway_cpu_pct_max": 100.0 * cpu_max / phase_s,
        "latency_samples": float(len(latencies)),
    }


def _baseline_parse_rate(n: int = 20_000) -> float:
    """Frames per CPU-second of the gateway's per-frame work alone (CPU time, as the flood phase's
    figure: wall time on a loaded machine would count other processes' turns)."""
    frame, now_ms = _telemetry("bench-00000", 1), time.time_ns() // 1_000_000
    started = time.process_time()
    for _ in range(n):
        parse_frame(CODEC, frame, "bench-00000", now_ms)
    return n / (time.process_time() - started)
