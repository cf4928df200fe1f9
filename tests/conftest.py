"""Shared fixtures: the real local stack (broker, Redis, history server) on free ports.

The stack is session-scoped: it starts once in a temporary data directory and
every integration test shares it. Tests that need isolation create their own
topics, keys or tables with unique names instead of restarting the stack.
"""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from core.config import Settings
from vpp.stack import running

if TYPE_CHECKING:
    from tests.own_redis import RedisServer


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def local_settings(data_dir: Path, **overrides: object) -> Settings:
    """Settings for a private local stack on free ports under ``data_dir``."""
    values: dict[str, object] = {
        "data_dir": data_dir,
        "kafka_port": free_port(),
        "redis_port": free_port(),
        "clickhouse_port": free_port(),
        "kafka_bootstrap": None,
        "redis_url": None,
        "clickhouse_url": None,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def stack_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Settings of a running local stack, started for this test session and stopped after it."""
    settings = local_settings(
        tmp_path_factory.mktemp("stack"),
        default_partitions=3,
        topic_partitions={"telemetry.raw": 6},
    )
    with running(settings):
        yield settings


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of the test's own, which it may kill, pause (SIGSTOP) and start again."""
    from tests.own_redis import RedisServer  # it imports free_port from here

    server = RedisServer(tmp_path)
    server.start()
    yield server
    if server.process is not None:
        os.kill(server.process.pid, signal.SIGCONT)
    server.stop()
