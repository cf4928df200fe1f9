"""Detached local processes under one data directory: start, wait until ready, status, stop.

One supervisor serves both the infrastructure (:mod:`vpp.stack`: broker, Redis,
history server) and the platform's own services (:mod:`vpp.services`:
dataflows, gateway, API, simulator). Each process runs in its own session with
its output in ``<data_dir>/logs/<name>.log`` and a pid file in
``<data_dir>/run``, so it outlives the command that started it; ``up`` rolls
back what it started when any process fails, so a failed ``up`` leaves nothing
half-running.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from core.waiting import GaveUpError, wait_until
from vpp.processes import PidFiles, ProcessRecord, is_alive, log_tail, spawn, stop

Progress = Callable[[str], None]


class StackError(RuntimeError):
    """A part could not start or be reached; the message says what to do next."""


class PartState(StrEnum):
    """Where a part stands after ``up`` or in ``status``."""

    STARTED = "started"
    ALREADY_RUNNING = "already running"
    EXTERNAL = "external"
    RUNNING = "running"
    UNHEALTHY = "unhealthy"
    STOPPED = "stopped"


@dataclass(frozen=True)
class PartStatus:
    """A part's state, address and pid (None when not ours or not running)."""

    name: str
    title: str
    address: str
    state: PartState
    pid: int | None = None


@dataclass(frozen=True)
class Managed:
    """One process the supervisor runs: how to start it and how to tell it is ready.

    ``ready`` None means the process has no health check: it counts as ready
    once it stayed alive for ``settle_s``. ``external`` parts are not started,
    only probed (a real Kafka, Redis or ClickHouse named by a ``VPP_*`` URL).
    ``port_busy`` returns a message when the port the process needs is taken.
    """

    name: str
    title: str
    address: str
    argv: Callable[[], list[str]]
    ready: Callable[[], bool] | None = None
    settle_s: float = 2.0
    external: bool = False
    prepare: Callable[[], None] | None = None
    port_busy: Callable[[], str | None] | None = None
    #: Whether a running process that does not answer its probe is an error at ``up`` (infrastructure).
    must_answer_when_running: bool = False
    #: Variables added to this process's environment (secrets it must not get on its command line).
    env: Callable[[], dict[str, str]] | None = None


def no_progress(_: str) -> None:
    """Default progress callback: say nothing."""


class Supervisor:
    """Runs a list of :class:`Managed` processes, in order, for one data directory."""

    def __init__(self, data_dir: Path, startup_timeout_s: float, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir.resolve()
        self.pids = PidFiles(self.data_dir / "run")
        self.startup_timeout_s = startup_timeout_s
        self.env = env

    def log_path(self, name: str) -> Path:
        """Where a process's output goes."""
        return self.data_dir / "logs" / f"{name}.log"

    def up(self, processes: list[Managed], progress: Progress = no_progress,
           then: Callable[[], None] | None = None) -> list[PartStatus]:
        """Start what is not running and wait until each is ready, then run ``then``.

        If anything fails (``then`` included), the processes this call started are
        stopped again.
        """
        statuses: list[PartStatus] = []
        started: list[ProcessRecord] = []
        try:
            for process in processes:
                statuses.append(self._start(process, started, progress))
            if then is not None:
                then()
        except BaseException:
            for record in reversed(started):
                stop(record)
                self.pids.remove(record.name)
            raise
        return statuses

    def _start(self, process: Managed, started: list[ProcessRecord], progress: Progress) -> PartStatus:
        if process.external:
            progress(f"checking {process.title} at {process.address}")
            self._wait_ready(process, record=None)
            return PartStatus(process.name, process.title, process.address, PartState.EXTERNAL)
        running = self.pids.running(process.name)
        if running is not None:
            # A busy machine answers slowly: probe again within the startup budget, not once.
            if (process.must_answer_when_running and process.ready is not None
                    and not self._answers(process, running)):
                raise StackError(
                    f"{process.title} (pid {running.pid}) is running but did not answer at {process.address} "
                    f"within {self.startup_timeout_s:.0f} s; see {running.log}, then `vpp down` and `vpp up`"
                )
            return PartStatus(process.name, process.title, process.address, PartState.ALREADY_RUNNING,
                              running.pid)
        if process.port_busy is not None and (busy := process.port_busy()) is not None:
            raise StackError(busy)
        progress(f"starting {process.title}")
        if process.prepare is not None:
            process.prepare()
        env = self.env if process.env is None else {**(self.env or os.environ), **process.env()}
        _, record = spawn(process.name, process.argv(), process.address, self.log_path(process.name), env=env)
        started.append(record)
        self.pids.write(record)
        self._wait_ready(process, record)
        return PartStatus(process.name, process.title, process.address, PartState.STARTED, record.pid)

    def _answers(self, process: Managed, record: ProcessRecord) -> bool:
        """True once a running process answers its probe within the startup budget (False if it died)."""
        assert process.ready is not None
        try:
            return wait_until(process.ready, self.startup_timeout_s, interval_s=0.5,
                              abandon=lambda: None if is_alive(record) else "exited")
        except GaveUpError:
            return False

    def _wait_ready(self, process: Managed, record: ProcessRecord | None) -> None:
        def exited() -> str | None:
            if record is None or is_alive(record):
                return None
            return (f"{process.title} exited while starting; its log ({record.log}) ends with:\n"
                    f"{log_tail(Path(record.log))}")

        if process.ready is None:
            # No health check: ready once it stayed alive for the settle time.
            try:
                wait_until(lambda: False, process.settle_s, interval_s=0.1, abandon=exited)
            except GaveUpError as exc:
                raise StackError(str(exc)) from None
            return
        try:
            if wait_until(process.ready, self.startup_timeout_s, abandon=exited):
                return
        except GaveUpError as exc:
            raise StackError(str(exc)) from None
        where = f"; see {record.log}" if record else ""
        raise StackError(f"{process.title} did not become ready at {process.address} within "
                         f"{self.startup_timeout_s:.0f} s{where}")

    def status(self, processes: list[Managed]) -> list[PartStatus]:
        """Each process's state right now."""
        statuses = []
        for process in processes:
            healthy = process.ready if process.ready is not None else lambda: True
            if process.external:
                state = PartState.EXTERNAL if healthy() else PartState.UNHEALTHY
                statuses.append(PartStatus(process.name, process.title, process.address, state))
                continue
            record = self.pids.running(process.name)
            if record is None:
                statuses.append(PartStatus(process.name, process.title, process.address, PartState.STOPPED))
                continue
            state = PartState.RUNNING if healthy() else PartState.UNHEALTHY
            statuses.append(PartStatus(process.name, process.title, process.address, state, record.pid))
        return statuses

    def down(self, processes: list[Managed], progress: Progress = no_progress) -> list[PartStatus]:
        """Stop every running process, last started first; return what was stopped."""
        stopped = []
        for process in reversed(processes):
            record = self.pids.running(process.name)
            if record is None:
                continue
            progress(f"stopping {process.title} (pid {record.pid})")
            stop(record)
            self.pids.remove(process.name)
            stopped.append(PartStatus(process.name, process.title, process.address, PartState.STOPPED,
                                      record.pid))
        return stopped
