"""Closed-loop control over the real stack: the issue's scenario, and what delivery must guarantee.

300 simulated sites on a clock five times faster than real time, 10% of them
acknowledging commands and then ignoring them, 5% of the commanded ones
dropping off the network mid-dispatch, 5% behind a link that loses the first
attempt of every command. The real telemetry dataflow keeps the twin, the
real control dataflow dispatches 600 kW from the region with correction, and is
SIGKILLed two minutes (simulated) into the window and restarted on its recovery
store: one real-stack dispatch proves tracking, delivery and crash recovery
together. Closed against open loop is compared in-process
(``tests/control/test_dispatch.py``) and by ``vpp bench control``, which runs
both dispatches over the real stack.

The fleet is the bench's quick one (300 sites, 600 kW, about half of them commanded): 30 that
ignore their commands, about 8 commanded sites that drop off, and a lossy share of 5% rather than
the bench's 2%, so that about 10 commanded sites (not 2) sit behind the lossy link. The 1,000-site
fleet proved nothing more here and fed the telemetry flow 5,000 readings a second (wall): at a load
average of 25 it starved the flows (5 settled statuses, 4.2 % error, 56 % of the energy delivered)
where 300 sites passed with margin (15 statuses, 0.15 %, 86 %). The window stays six simulated
minutes at five times real time (72 s of the module's wall time): the flow's start-up and restart
cost tens of simulated seconds however long the window is, and in a shorter one they would eat the
margin of the delivered energy on a loaded machine.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
import redis
from typer.testing import CliRunner, Result

from bench.control import Harness, Run, Scenario
from core.config import Settings
from core.dispatch import submit
from core.dispatch_spec import DispatchRejectedError, DispatchSpec
from core.history import HistoryStore, connect
from core.rows import DispatchLogEntry
from core.waiting import wait_until
from tests.conftest import local_settings
from tests.control.test_outcome import recompute
from vpp.cli import app
from vpp.dataflows import settings_env
from vpp.stack import running

pytestmark = pytest.mark.integration

SCENARIO = Scenario(sites=300, target_kw=600.0, lossy_share=0.05)
#: What a wait for the flow may take before it counts as never: generous, so only a hang fails it, not a
#: loaded machine (the waits end as soon as their condition holds).
PATIENCE_S = 120.0


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
    # simulator can report a single far-off status (188 kW of 2 MW, 1,000 sites at a load average of 20) while
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
    logged: list[DispatchLogEntry] = []

    def journaled() -> bool:  # the journal is written at the flow's next snapshot
        logged[:] = HistoryStore(client, db).dispatch_log(closed.dispatch_id)
        return bool({"COMPLETED", "PARTIAL"} & {entry.state for entry in logged})

    assert wait_until(journaled, PATIENCE_S, interval_s=0.5), [entry.state for entry in logged]
    assert "ACTIVE" in {entry.state for entry in logged}
    # The outcome figures are what the dispatch_log rows say (recomputed independently).
    final = closed.statuses[-1]
    expected = recompute(logged, closed.start_ms, closed.end_ms)
    for name, value in expected.items():
        assert float(final[name]) == pytest.approx(value, rel=1e-6, abs=1e-6), (name, final)
    assert [entry.event_time for entry in logged] == sorted(entry.event_time for entry in logged)
    # Every command record on the topic is one SENT row (the flow journals what it reads back), those
    # sent before the kill and not yet in the flow's snapshot included.
    seen_on_kafka = len({(c["command_id"], c["attempt"], c["issued_at"]) for c in closed.commands})

    def sent() -> int:
        result = client.query(f"SELECT count() FROM {db}.command_log FINAL WHERE dispatch_id = %(id)s "
                              "AND status = 'SENT'", parameters={"id": closed.dispatch_id})
        return int(result.result_rows[0][0])

    # The journal is written at the flow's next snapshot; more rows than records would not wait long.
    wait_until(lambda: sent() >= seen_on_kafka, PATIENCE_S, interval_s=0.5)
    assert sent() == seen_on_kafka


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


def _vpp(harness: Harness, *args: str) -> Result:
    """``vpp dispatch ARGS`` in-process, on the harness's settings: a subprocess per command cost a Python
    start and the CLI's imports each time (seconds apiece on a loaded machine); that ``vpp`` runs as a
    program is shown by tests/integration/test_stack_cli.py and test_system_up.py."""
    return CliRunner().invoke(app, ["dispatch", *args], env=settings_env(harness.settings))


def test_the_cli_dispatches_shows_and_cancels(harness: Harness, closed: Run) -> None:
    refused = _vpp(harness, "region-404", "--kw", "100", "--minutes", "5", "--no-follow")
    assert refused.exit_code == 2
    assert "unknown node 'region-404'" in " ".join(refused.stderr.split())
    start = harness.clock.now().isoformat()  # the fleet's (accelerated) time
    # It watches until the dispatch converges (seconds), at most --wait: a budget, not a measurement.
    sent = _vpp(harness, "region-0", "--kw", "100", "--minutes", "5", "--start", start,
                "--wait", str(PATIENCE_S))
    assert sent.exit_code == 0, sent.output
    ident = sent.stdout.split("dispatch ", 1)[1].split(":", 1)[0].strip()
    assert "ACTIVE" in sent.stdout, "it watched the dispatch converge"
    cancelled = _vpp(harness, "cancel", ident)
    assert cancelled.exit_code == 0, cancelled.output
    assert wait_until(lambda: "CANCELLED" in _vpp(harness, "status", ident, "--no-follow").stdout,
                      PATIENCE_S, interval_s=0.2), "the cancel reached the control dataflow"
    assert ident in _vpp(harness, "list").stdout
