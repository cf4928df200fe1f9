"""`vpp up` on a busy machine: a running part that answers slowly is probed again, not failed at once.

Seen: under CPU load `vpp up` failed two runs in three with "Kafka running but
not answering", from a single 1 s probe of a broker that was merely slow.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from vpp.processes import spawn, stop
from vpp.supervisor import Managed, PartState, StackError, Supervisor


def _running_part(tmp_path: Path, ready: list[bool]) -> tuple[Supervisor, Managed]:
    supervisor = Supervisor(tmp_path, startup_timeout_s=60.0)
    sleep = shutil.which("sleep")
    assert sleep is not None
    argv = [sleep, "600"]
    _, record = spawn("part", argv, "here", supervisor.log_path("part"))
    supervisor.pids.write(record)
    answers = iter(ready)
    part = Managed("part", "A part", "here", lambda: argv, ready=lambda: next(answers, True),
                   must_answer_when_running=True)
    return supervisor, part


def test_a_running_part_that_answers_after_a_few_probes_is_already_running(tmp_path: Path) -> None:
    supervisor, part = _running_part(tmp_path, [False, False, False])
    record = supervisor.pids.read("part")
    assert record is not None
    try:
        (status,) = supervisor.up([part])
        assert status.state == PartState.ALREADY_RUNNING
    finally:
        stop(record)


def test_a_running_part_that_never_answers_is_an_error(tmp_path: Path) -> None:
    supervisor, part = _running_part(tmp_path, [])
    part = Managed(part.name, part.title, part.address, part.argv, ready=lambda: False,
                   must_answer_when_running=True)
    supervisor.startup_timeout_s = 1.0
    record = supervisor.pids.read("part")
    assert record is not None
    try:
        with pytest.raises(StackError, match="did not answer"):
            supervisor.up([part])
    finally:
        stop(record)
