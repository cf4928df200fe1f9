"""How a Bytewax dataflow process is started: command line, environment, recovery store.

One place for it, so ``vpp up``, the tests and the benchmarks start dataflows
exactly the same way (and the same way the k8s StatefulSets do, through
``deploy/run-dataflow.sh``).

Recovery: Bytewax keeps state snapshots and input offsets in SQLite partitions
under ``<data_dir>/recovery/<flow>``; they must exist before the first run and
their number is fixed afterwards. A process killed at any point resumes from
the last completed epoch (``snapshot_interval_s``), and the idempotent sinks
absorb the replay of the epoch it was in.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from pydantic import SecretStr

from core.config import Settings

#: Recovery partitions of a new store: at least the processes you will ever run it with.
RECOVERY_PARTITIONS = 2


def settings_env(settings: Settings) -> dict[str, str]:
    """``VPP_*`` variables that give a child process the same settings (secrets included)."""
    env: dict[str, str] = {}
    dumped = settings.model_dump(mode="json")
    for name, value in dumped.items():
        raw = getattr(settings, name)
        if value is None:
            continue
        key = f"VPP_{name.upper()}"
        if isinstance(raw, SecretStr):
            env[key] = raw.get_secret_value()
        elif isinstance(value, dict | list):
            env[key] = json.dumps(value)
        elif isinstance(value, bool):
            env[key] = "true" if value else "false"
        else:
            env[key] = str(value)
    return env


def recovery_dir(settings: Settings, flow: str) -> Path:
    return settings.data_dir.resolve() / "recovery" / flow


def ensure_recovery(directory: Path, partitions: int = RECOVERY_PARTITIONS) -> None:
    """Create the recovery partitions unless the store already has them."""
    if directory.is_dir() and any(directory.glob("part-*.sqlite3")):
        return
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "bytewax.recovery", str(directory), str(partitions)],
                   check=True, capture_output=True)


def dataflow_argv(flow: str, settings: Settings, workers: int = 1, recovery: Path | None = None,
                  process_id: int | None = None, addresses: list[str] | None = None) -> list[str]:
    """The command line of one dataflow process (``flow`` is the module under ``dataflows``)."""
    argv = [sys.executable, "-m", "bytewax.run", f"dataflows.{flow}:flow", "-w", str(workers)]
    if process_id is not None and addresses:
        argv += ["-i", str(process_id), "-a", ";".join(addresses)]
    if recovery is not None:
        argv += ["-r", str(recovery), "-s", str(settings.snapshot_interval_s), "-b", "0"]
    return argv
