"""Group commits for lag tools never stall or fail the flow when the broker is away, and say so once.

The commits of every partition of a flow go through one committer: with no
broker each one fails (after its request timeout), the committer logs one
warning for the group rather than one per partition and epoch, and waiting
for a last commit at close is skipped once commits are known to fail.
"""

from __future__ import annotations

import logging

import pytest

from core.waiting import wait_until
from operators.group_commits import GroupCommitter
from tests.conftest import free_port


def test_commits_to_a_dead_broker_warn_once_and_never_raise(caplog: pytest.LogCaptureFixture) -> None:
    committer = GroupCommitter({"bootstrap.servers": f"127.0.0.1:{free_port()}"}, "vpp-test-dataflow",
                               timeout_s=1.0)
    with caplog.at_level(logging.WARNING, logger="operators.group_commits"):
        sent = [committer.commit("telemetry.raw", partition, 10 + partition) for partition in range(3)]
        assert all(future is not None for future in sent)
        assert wait_until(lambda: all(future is not None and future.done() for future in sent), 60,
                          interval_s=0.05)
        committer.settle(sent[-1])  # commits are failing: returns at once, raises nothing
        more = committer.commit("telemetry.raw", 0, 20)
        assert wait_until(lambda: more is not None and more.done(), 60, interval_s=0.05)
    warnings = [r for r in caplog.records if r.name == "operators.group_commits"]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "vpp-test-dataflow" in warnings[0].getMessage()
