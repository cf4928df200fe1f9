"""A benchmark's own local stack: a private data directory and free ports, so nothing collides."""

from __future__ import annotations

import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from vpp.config import Settings
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
