"""The `vpp stack` lifecycle through the real CLI, as a newcomer runs it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from confluent_kafka import Consumer, TopicPartition

from core import kafka
from core.config import Settings
from core.topics import ASSETS_CHANGES, TOPICS
from core.waiting import wait_until
from tests.conftest import free_port
from vpp.processes import is_alive
from vpp.stack import Stack

#: Budgets that only a hang exceeds: on a machine at load 30 one `vpp stack up` can take minutes.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]
PATIENCE_S = 300


def _env(data_dir: Path, ports: dict[str, int]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VPP_")}
    env.update(
        VPP_DATA_DIR=str(data_dir),
        VPP_KAFKA_PORT=str(ports["kafka"]),
        VPP_REDIS_PORT=str(ports["redis"]),
        VPP_CLICKHOUSE_PORT=str(ports["clickhouse"]),
        VPP_STARTUP_TIMEOUT_S="120",  # each part's readiness: slow, not failed, on a loaded machine
        COLUMNS="200",
    )
    return env


def _vpp(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vpp.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=PATIENCE_S,
    )


def test_up_twice_status_down_leaves_nothing_and_the_fleet_survives_a_restart(cli_data_dir: Path) -> None:
    """One stack through its life: up, up again, status, a fleet, down, up (the fleet is back), down."""
    ports = {"kafka": free_port(), "redis": free_port(), "clickhouse": free_port()}
    env = _env(cli_data_dir, ports)

    first = _vpp(env, "stack", "up")
    assert first.returncode == 0, first.stderr
    assert f"{len(TOPICS)} topics ({len(TOPICS)} created now)" in first.stdout
    second = _vpp(env, "stack", "up")
    assert second.returncode == 0, second.stderr
    assert "already running" in second.stdout
    assert f"{len(TOPICS)} topics (0 created now)" in second.stdout

    status = _vpp(env, "stack", "status")
    assert status.returncode == 0, status.stderr
    assert status.stdout.count("running") == 3
    for port in ports.values():
        assert str(port) in status.stdout
    loaded = _vpp(env, "fleet", "generate", "--sites", "200", "--seed", "2")
    assert loaded.returncode == 0, loaded.stderr

    pids = Stack(Settings(data_dir=cli_data_dir)).pids
    records = [pids.read(name) for name in ("broker", "redis", "history")]
    down = _vpp(env, "stack", "down")
    assert down.returncode == 0, down.stderr
    assert "stopped 3 part(s)" in down.stdout
    for record in records:
        assert record is not None
        assert not is_alive(record), f"{record.name} (pid {record.pid}) still runs after `vpp stack down`"
    for port in ports.values():
        with socket.socket() as sock, pytest.raises(OSError):
            sock.connect(("127.0.0.1", port))

    # The broker kept nothing; the restart re-publishes from the history store.
    restarted = _vpp(env, "stack", "up")
    assert restarted.returncode == 0, restarted.stderr
    assert "re-published 200 stored sites" in " ".join(restarted.stdout.split())
    settings = Settings(data_dir=cli_data_dir, kafka_port=ports["kafka"], redis_port=ports["redis"],
                        clickhouse_port=ports["clickhouse"])
    with redis.Redis.from_url(settings.redis, decode_responses=True) as rds:
        assert rds.scard("node:region-0:sites") == 200
    consumer = Consumer(kafka.client_config(settings, **{"group.id": "restart-test"}))
    topic = kafka.admin(settings).list_topics(ASSETS_CHANGES, timeout=10).topics[ASSETS_CHANGES]
    consumer.assign([TopicPartition(ASSETS_CHANGES, p, 0) for p in topic.partitions])
    sites: set[bytes] = set()

    def all_read() -> bool:
        sites.update(m.key() or b"" for m in consumer.consume(500, timeout=0.5))
        return len(sites) >= 200

    wait_until(all_read, PATIENCE_S, interval_s=0)
    consumer.close()
    assert len(sites) == 200

    assert _vpp(env, "stack", "down").returncode == 0
    assert "nothing was running" in _vpp(env, "stack", "down").stdout


def test_busy_port_is_a_clear_error_and_starts_nothing(cli_data_dir: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        busy = squatter.getsockname()[1]
        ports = {"kafka": free_port(), "redis": busy, "clickhouse": free_port()}
        env = _env(cli_data_dir, ports)
        result = _vpp(env, "stack", "up")
    assert result.returncode == 1
    message = " ".join(result.stderr.split())
    assert f"port {busy}" in message
    assert "VPP_REDIS_PORT" in message
    # The broker had started before Redis failed: it must have been stopped again.
    assert Stack(Settings(data_dir=cli_data_dir)).pids.read("broker") is None
    with socket.socket() as sock, pytest.raises(OSError):
        sock.connect(("127.0.0.1", ports["kafka"]))
