"""The ``cli_data_dir`` fixture's cleanup: what a killed ``vpp up`` left running under it is stopped."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import stop_recorded
from vpp.processes import PidFiles, is_alive, spawn


def test_a_process_recorded_under_the_data_directory_is_stopped(tmp_path: Path) -> None:
    pids = PidFiles(tmp_path / "run")
    _, record = spawn("orphan", ["/bin/sleep", "300"], "nowhere", tmp_path / "logs" / "orphan.log")
    pids.write(record)
    assert is_alive(record)
    assert stop_recorded(tmp_path) == ["orphan"]
    assert not is_alive(record)
    assert pids.read("orphan") is None
    assert stop_recorded(tmp_path) == [], "nothing left to stop"
