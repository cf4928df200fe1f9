"""Shared fixtures: the real local stack (broker, Redis, history server) on free ports.

The stack is session-scoped: it starts once in a temporary data directory and
every integration test shares it. Tests that need isolation create their own
topics, keys or tables with unique names instead of restarting the stack.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from core import kafka
from core.config import Settings
from core.waiting import wait_until
from vpp.processes import PidFiles, stop
from vpp.stack import _broker_binary, _probe_broker, running

if TYPE_CHECKING:
    from tests.own_redis import RedisServer


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadfile`` (``scripts/test`` runs ``-n 2``), but tests/api goes to one worker as a whole:
    its package fixture runs a live fleet, which should start once. Each worker has its own session
    stack. (``--dist loadgroup`` cannot do this: pytest-xdist 3.8 marks a group by rewriting a private
    node id that pytest 9 no longer reads.)"""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ModuleScheduling(LoadScopeScheduling):  # type: ignore[misc]  # xdist ships no types
        def _split_scope(self, nodeid: str) -> str:
            return _xdist_unit(nodeid)

    return ModuleScheduling(config, log)


def pytest_configure(config: pytest.Config) -> None:
    """Hypothesis without its per-example deadline (200 ms by default), for every property, also those
    that set no ``settings``: the deadline is a wall-clock assertion, which a loaded machine fails.
    Each property bounds its work with ``max_examples`` instead."""
    from hypothesis import settings

    settings.register_profile("vpp", deadline=None)
    settings.load_profile("vpp")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On a pytest-xdist worker, modules that start real parts (``integration``) come first, so the
    short unit modules fill in at the end rather than a long real-stack module running alone there
    (``--no-loadscope-reorder`` makes the scheduler keep this order). A plain run is left as it is."""
    if not hasattr(config, "workerinput"):
        return
    real_stack = {_xdist_unit(item.nodeid) for item in items if item.get_closest_marker("integration")}
    items.sort(key=lambda item: _xdist_unit(item.nodeid) not in real_stack)  # stable: units stay whole


def _xdist_unit(nodeid: str) -> str:
    """What one xdist worker runs whole: tests/api, else the test's module."""
    path = nodeid.split("::", 1)[0]
    return "tests/api" if path.startswith("tests/api/") else path


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
        # The dataflows' probes too: flows of parallel sessions must not answer for each other.
        "telemetry_probe_port": free_port(),
        "control_probe_port": free_port(),
        "plans_probe_port": free_port(),
        "bidding_probe_port": free_port(),
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


def stop_recorded(data_dir: Path) -> list[str]:
    """Stop every process still recorded under ``data_dir/run`` (its whole process group); their names."""
    pids = PidFiles(data_dir / "run")
    stopped = []
    for path in sorted(pids.run_dir.glob("*.json")):
        record = pids.running(path.stem)
        if record is not None:
            stop(record)
            stopped.append(record.name)
        pids.remove(path.stem)
    return stopped


@pytest.fixture
def cli_data_dir(tmp_path: Path) -> Iterator[Path]:
    """A data directory for a test that starts parts through the CLI (``vpp up``, ``vpp stack up``).

    Whatever is still recorded under it when the test ends is stopped, however the test ends: a
    failed assertion, or pytest's timeout interrupting ``vpp up`` itself (a killed ``vpp up`` leaves
    its detached parts running, and no ``vpp down`` in the test body would run).
    """
    try:
        yield tmp_path
    finally:
        stop_recorded(tmp_path)


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


@pytest.fixture
def own_broker(stack_settings: Settings) -> Iterator[tuple[Settings, subprocess.Popen[bytes]]]:
    """A broker of the test's own (with the project's topics), which it may pause (SIGSTOP) or kill;
    the settings are the shared stack's but for the broker's port."""
    port = free_port()
    settings = stack_settings.model_copy(update={"kafka_port": port})
    process = subprocess.Popen(
        [_broker_binary(), "broker", "--listener-url", f"tcp://127.0.0.1:{port}",
         "--advertised-listener-url", f"tcp://127.0.0.1:{port}", "--storage-engine", "memory://tansu/"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_until(lambda: _probe_broker(settings), 60, interval_s=0.1), "the own broker did not start"
        kafka.ensure_topics(settings)
        yield settings, process
    finally:
        os.kill(process.pid, signal.SIGCONT)
        process.kill()
        process.wait()
