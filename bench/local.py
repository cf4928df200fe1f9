"""Settings for a benchmark's own local stack: a private data directory and free ports."""

from __future__ import annotations

import socket
from pathlib import Path

from vpp.config import Settings


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def private_settings(data_dir: Path) -> Settings:
    """A stack under ``data_dir`` that cannot collide with `vpp up` or another benchmark."""
    return Settings(data_dir=data_dir, kafka_port=_free_port(), redis_port=_free_port(),
                    clickhouse_port=_free_port(), kafka_bootstrap=None, redis_url=None, clickhouse_url=None)
