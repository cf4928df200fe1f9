"""Detached child processes with pid files: start, find, stop.

The local stack's parts (broker, Redis, history server, later dataflows and
services) outlive the ``vpp`` command that started them, so each is started in
its own session with its output in a log file, and remembered in a JSON pid
file. A pid file is trusted only while its process is alive *and* still runs
the command it recorded: a recycled pid never makes us stop a stranger.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class ProcessRecord:
    """What a pid file says about one running part."""

    name: str
    pid: int
    argv: list[str]
    address: str
    log: str
    started_at: float


def _proc_exe(pid: int) -> str | None:
    """The executable of ``pid`` from /proc, or None if it is gone or unreadable."""
    try:
        return os.path.realpath(os.readlink(f"/proc/{pid}/exe"))
    except OSError:
        return None


def is_alive(record: ProcessRecord) -> bool:
    """True while the recorded process runs and is still the program we started.

    The executable is compared rather than the command line because some
    servers (redis-server) rewrite their process title.
    """
    try:
        os.kill(record.pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    if not Path("/proc").exists():  # no /proc on this system: the signal check is all we have
        return True
    exe = _proc_exe(record.pid)  # None for a zombie or a process that just exited
    return exe is not None and exe == os.path.realpath(record.argv[0])


class PidFiles:
    """The pid files of one data directory, one per part name."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir

    def path(self, name: str) -> Path:
        """Where the pid file of ``name`` lives."""
        return self.run_dir / f"{name}.json"

    def read(self, name: str) -> ProcessRecord | None:
        """The record of ``name``, or None if there is none or it is unreadable."""
        try:
            data = json.loads(self.path(name).read_text())
            return ProcessRecord(**data)
        except (FileNotFoundError, json.JSONDecodeError, TypeError):
            return None

    def running(self, name: str) -> ProcessRecord | None:
        """The record of ``name`` if that process is alive; stale files are removed."""
        record = self.read(name)
        if record is None:
            return None
        if is_alive(record):
            return record
        self.path(name).unlink(missing_ok=True)
        return None

    def write(self, record: ProcessRecord) -> None:
        """Record a started process (atomically, so readers never see half a file)."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.path(record.name).with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(record)))
        tmp.replace(self.path(record.name))

    def remove(self, name: str) -> None:
        """Forget ``name``."""
        self.path(name).unlink(missing_ok=True)


def spawn(name: str, argv: list[str], address: str, log_path: Path, env: dict[str, str] | None = None,
          cwd: Path | None = None) -> tuple[subprocess.Popen[bytes], ProcessRecord]:
    """Start ``argv`` detached in its own session, output appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
            cwd=cwd,
        )
    record = ProcessRecord(
        name=name, pid=proc.pid, argv=argv, address=address, log=str(log_path), started_at=time.time()
    )
    return proc, record


def stop(record: ProcessRecord, timeout_s: float = 10.0) -> bool:
    """SIGTERM the process group, then SIGKILL after ``timeout_s``; True if it had to be killed."""
    try:
        os.killpg(record.pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not is_alive(record):
            _reap(record.pid)
            return False
        _reap(record.pid)
        time.sleep(0.05)
    try:
        os.killpg(record.pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    _reap(record.pid)
    return True


def _reap(pid: int) -> None:
    """Collect the exit status if ``pid`` is our own child, so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def log_tail(path: Path, lines: int = 20) -> str:
    """The last lines of a log file, for error messages."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no log written)"
    return "\n".join(text.splitlines()[-lines:])
