"""deploy/run-dataflow.sh: process id, peer addresses and recovery partitions of a dataflow pod.

The script runs here as in the pod, under ``sh``. For ``run``, a stand-in ``python`` first on
PATH records the arguments instead of starting Bytewax; ``init`` runs the real
``python -m bytewax.recovery`` of this environment.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.k8s.manifests import ROOT

SCRIPT = ROOT / "deploy" / "run-dataflow.sh"


def run_script(*args: str, env: dict[str, str], path: str) -> subprocess.CompletedProcess[str]:
    """Run the script with only ``env`` (plus PATH) in its environment."""
    return subprocess.run(
        ["sh", str(SCRIPT), *args],
        env={"PATH": path, **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )


@pytest.fixture
def recorded_python(tmp_path: Path) -> str:
    """A PATH whose ``python`` prints its arguments one per line (stands in for Bytewax)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "python"
    fake.write_text('#!/bin/sh\nfor arg in "$@"; do echo "$arg"; done\n')
    fake.chmod(0o755)
    return f"{bin_dir}:{os.environ['PATH']}"


def pod_env(hostname: str, **extra: str) -> dict[str, str]:
    """The environment of a telemetry pod with three processes in namespace vpp."""
    return {
        "HOSTNAME": hostname,
        "POD_NAMESPACE": "vpp",
        "DATAFLOW_SERVICE": "telemetry",
        "DATAFLOW_PROCESSES": "3",
        "DATAFLOW_SNAPSHOT_S": "30",
        "DATAFLOW_BACKUP_S": "600",
        "BYTEWAX_RECOVERY_DIRECTORY": "/recovery",
        **extra,
    }


def test_run_passes_ordinal_and_every_peer(recorded_python: str) -> None:
    """Process id = ordinal; addresses list every pod by its headless-Service DNS name, in order."""
    out = run_script("run", "dataflows.telemetry:flow", env=pod_env("telemetry-2"), path=recorded_python)
    peers = ";".join(f"telemetry-{i}.telemetry.vpp.svc:2101" for i in range(3))
    assert out.stdout.split("\n")[:-1] == [
        "-m", "bytewax.run", "dataflows.telemetry:flow",
        "-i", "2", "-a", peers, "-r", "/recovery", "-s", "30", "-b", "600",
    ]  # fmt: skip


def test_pod_index_label_wins_over_hostname(recorded_python: str) -> None:
    """The downward-API pod index is used when the cluster sets it."""
    out = run_script("run", "m:flow", env=pod_env("telemetry-2", POD_INDEX="1"), path=recorded_python)
    args = out.stdout.split("\n")
    assert args[args.index("-i") + 1] == "1"


def init(recovery: Path, hostname: str, partitions: int) -> list[str]:
    """Run ``init`` for a pod and return the partition files it leaves in ``recovery``."""
    env = {"HOSTNAME": hostname, "DATAFLOW_RECOVERY_PARTITIONS": str(partitions)}
    run_script(
        "init",
        env={**env, "BYTEWAX_RECOVERY_DIRECTORY": str(recovery)},
        path=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    )
    return sorted(path.name for path in recovery.iterdir())


def test_init_creates_only_this_pods_partition(tmp_path: Path) -> None:
    """Pod k owns partition k of the store: exactly one copy of each across the cluster."""
    volumes = [tmp_path / f"telemetry-{i}" for i in range(3)]
    for ordinal, volume in enumerate(volumes):
        volume.mkdir()
        assert init(volume, f"telemetry-{ordinal}", 3) == [f"part-{ordinal}.sqlite3"]


def test_init_keeps_an_existing_partition(tmp_path: Path) -> None:
    """A restarted pod resumes from its partition; init never replaces it."""
    init(tmp_path, "telemetry-1", 3)
    before = (tmp_path / "part-1.sqlite3").read_bytes()
    assert init(tmp_path, "telemetry-1", 3) == ["part-1.sqlite3"]
    assert (tmp_path / "part-1.sqlite3").read_bytes() == before


def test_init_leaves_pods_beyond_the_partition_count_empty(tmp_path: Path) -> None:
    """After scaling out, the new processes hold no partition (Bytewax allows that)."""
    assert init(tmp_path, "telemetry-4", 3) == []
