"""Closed-loop control over the real stack: the issue's scenario, and what delivery must guarantee.

1,000 simulated sites on a clock five times faster than real time, 10% of them
acknowledging commands and then ignoring them, 5% of the commanded ones
dropping off the network mid-dispatch, 2% behind a link that loses the first
attempt of every command. The real telemetry dataflow keeps the twin, the
real control dataflow dispatches 2 MW from the region with correction, and is
SIGKILLed two minutes (simulated) into the window and restarted on its recovery
store: one real-stack dispatch proves tracking, delivery and crash recovery
together. Closed against open loop is compared in-process
(``tests/control/test_dispatch.py``) and by ``vpp bench control``, which runs
both dispatches over the real stack.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
import redis

from bench.control import Harness, Run, Scenario
from core.config import Settings
from core.dispatch import submit
from core.dispatch_spec import DispatchRejectedError, DispatchSpec
from core.history import HistoryStore, connect
from tests.conftest import local_settings
from tests.control.test_outcome import recompute
from vpp.dataflows import settings_env
from vpp.stack import running

pytestmark = pytest.mark.integration

SCENARIO = Scenario()


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    settings = local_settings(tmp_path_factory.mktemp("control"))
    with running(settings):
        loop = Harness(settings, SCENARIO)
        with loop.running():
            yield loop


@pytest.fixture(scope="module")
def closed(harness: Harness) -> Run:
    """The closed-loop dispatch, with the control dataflow killed and restarted mid-window."""
    return harness.dispatch("waterfill", restart_after_s=120.0)


def test_with_correction_the_measured_aggregate_stays_within_2_percent(closed: Run) -> None:
    settled = closed.settled(SCENARIO.settle_after_s)
    assert len(settled) >= 10, "statuses kept coming through the settled part of the window"
    assert closed.error_pct(SCENARIO.settle_after_s) < 2.0
    # Few settled statuses stray far. Not none: on a loaded machine one starved epoch of the flow or the
    # simulator can report a single far-off status (188 kW of 2 MW seen at a load average of 20) while
    # the loop keeps tracking; the in-process loop (tests/control/test_dispatch.py) has no such stalls.
    strays = [s for s in settled if abs(float(s["error_kw"])) >= 0.05 * SCENARIO.target_kw]
    assert len(strays) <= 0.1 * len(settled), strays
    assert closed.disconnected, "sites did drop off mid-dispatch"
    # The outcome judges energy over the whole window: on this clock, five times real time, the control
    # flow's start-up latency and the restart are tens of simulated seconds of a six-minute window, so
    # the delivered energy may end just short of the 10 % tolerance. Either way it is said with figures.
    final = closed.statuses[-1]
    assert final["state"] in ("COMPLETED", "PARTIAL"), final
    assert final["state"] == "COMPLETED" or "kWh requested" in final["reason"], final
    assert float(final["delivered_kwh"]) > 0.8 * float(final["requested_kwh"]), final


def test_a_site_that_misses_the_first_command_gets_it_on_a_retry(harness: Harness, closed: Run) -> None:
    lossy = {c["site_id"] for c in closed.commands} & harness.fleet.lossy
    assert lossy, "some commanded sites sit behind the lossy link"
    accepted = {a["command_id"] for a in closed.acks if a["status"] == "ACCEPTED"}
    for site_id in lossy:
        attempts = [c for c in closed.commands if c["site_id"] == site_id]
        first = attempts[0]["command_id"]
        assert [c["attempt"] for c in attempts if c["command_id"] == first][:2] == [1, 2]
        assert first in accepted, "the retry got through and was accepted"


def test_nothing_is_sent_after_its_window_and_an_acked_command_is_not_sent_again(closed: Run) -> None:
    assert all(c["issued_at"] < c["valid_until"] for c in closed.commands)
    acked_at = {a["command_id"]: a["event_time"] for a in closed.acks if a["status"] == "ACCEPTED"}
    slack = timedelta(seconds=2 * SCENARIO.speed)  # an attempt already on its way when the ack came back
    for command in closed.commands:
        ack = acked_at.get(command["command_id"])
        if ack is not None:
            assert command["issued_at"] <= ack + slack, f"{command['command_id']} re-sent after its ack"


def test_the_dispatch_and_its_commands_are_journaled(harness: Harness, closed: Run) -> None:
    client = connect(harness.settings)
    db = harness.settings.clickhouse_database
    deadline = time.monotonic() + 15  # the journal is written at the flow's next snapshot
    logged = HistoryStore(client, db).dispatch_log(closed.dispatch_id)
    while not {"COMPLETED", "PARTIAL"} & {e.state for e in logged} and time.monotonic() < deadline:
        time.sleep(1)
        logged = HistoryStore(client, db).dispatch_log(closed.dispatch_id)
    assert "ACTIVE" in {entry.state for entry in logged}
    assert {"COMPLETED", "PARTIAL"} & {entry.state for entry in logged}
    # The outcome figures are what the dispatch_log rows say (recomputed independently).
    final = closed.statuses[-1]
    expected = recompute(logged, closed.start_ms, closed.end_ms)
    for name, value in expected.items():
        assert float(final[name]) == pytest.approx(value, rel=1e-6, abs=1e-6), (name, final)
    assert [entry.event_time for entry in logged] == sorted(entry.event_time for entry in logged)
    # Every command record on the topic is one SENT row (the flow journals what it reads back), those
    # sent before the kill and not yet in the flow's snapshot included.
    seen_on_kafka = len({(c["command_id"], c["attempt"], c["issued_at"]) for c in closed.commands})
    deadline = time.monotonic() + 15  # the journal is written at the flow's next snapshot
    while True:
        sent = client.query(f"SELECT count() FROM {db}.command_log FINAL WHERE dispatch_id = %(id)s "
                            "AND status = 'SENT'", parameters={"id": closed.dispatch_id}).result_rows[0][0]
        if sent == seen_on_kafka or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert sent == seen_on_kafka


def test_bad_requests_are_refused_before_anything_is_sent(harness: Harness) -> None:
    settings: Settings = harness.settings
    client = redis.Redis.from_url(settings.redis)
    now = harness.clock.now()
    cases = {
        "unknown node": DispatchSpec(100.0, now, now + timedelta(minutes=5), node_id="region-404"),
        "ends before": DispatchSpec(100.0, now, now - timedelta(minutes=5), node_id="region-0"),
        "absurd": DispatchSpec(5e6, now, now + timedelta(minutes=5), node_id="region-0"),
        "not a number": DispatchSpec(float("nan"), now, now + timedelta(minutes=5), node_id="region-0"),
    }
    for name, spec in cases.items():
        with pytest.raises(DispatchRejectedError):
            submit(settings, spec, "test", client)
        assert client.exists(f"dispatch:{spec.dispatch_id}") == 0, name


def test_an_active_dispatch_survives_a_killed_control_dataflow(closed: Run) -> None:
    assert closed.restarted_ms is not None
    after = [s for s in closed.statuses if int(s["event_time"]) > closed.restarted_ms]
    assert after, "statuses resume after the restart"
    assert closed.statuses[-1]["state"] in ("COMPLETED", "PARTIAL")
    assert closed.error_pct(SCENARIO.settle_after_s) < 2.0, "and the loop keeps tracking the target"
    # A state lost in the crash would plan the dispatch afresh: every site would get its first command
    # again. Restored from recovery, only the last second's epoch can be replayed.
    first_sends = [c["site_id"] for c in closed.commands if c["command_id"].endswith("/1")
                   and c["attempt"] == 1]
    repeated = len(first_sends) - len(set(first_sends))
    assert repeated < 0.1 * len(set(first_sends))


def _vpp(harness: Harness, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VPP_")}
    env.update(settings_env(harness.settings), COLUMNS="200")
    return subprocess.run([sys.executable, "-m", "vpp.cli", "dispatch", *args], env=env, capture_output=True,
                          text=True, check=False, timeout=120)


def test_the_cli_dispatches_shows_and_cancels(harness: Harness, closed: Run) -> None:
    refused = _vpp(harness, "region-404", "--kw", "100", "--minutes", "5", "--no-follow")
    assert refused.returncode == 2
    assert "unknown node 'region-404'" in refused.stderr
    start = harness.clock.now().isoformat()  # the fleet's (accelerated) time
    sent = _vpp(harness, "region-0", "--kw", "100", "--minutes", "5", "--start", start, "--wait", "20")
    assert sent.returncode == 0, sent.stderr
    ident = sent.stdout.split("dispatch ", 1)[1].split(":", 1)[0].strip()
    assert "ACTIVE" in sent.stdout, "it watched the dispatch converge"
    cancelled = _vpp(harness, "cancel", ident)
    assert cancelled.returncode == 0, cancelled.stderr
    deadline = time.monotonic() + 30
    while "CANCELLED" not in _vpp(harness, "status", ident, "--no-follow").stdout:
        assert time.monotonic() < deadline, "the cancel reached the control dataflow"
        time.sleep(1)
    assert ident in _vpp(harness, "list").stdout
