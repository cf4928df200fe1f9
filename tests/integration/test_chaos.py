"""Chaos at small scale: 200 simulated sites through a gateway process into the telemetry dataflow.

The harness is the chaos benchmark's (bench/chaos.py): the fleet runs on an
accelerated clock (4x, a sample every 4 simulated seconds), keeps its readings
while it cannot deliver them and uploads them later (store-and-forward with
delivery acknowledgements). Each test injects one fault and checks what the
issue asks: the fleet's coverage back at 100% within 30 s of the fault's end,
the gateway's readiness false during a fault that stops its work, and, over
whole minutes, ``site_minute`` and ``node_minute`` equal to the brute force over
every reading the devices took: none lost, none counted twice.

Also the control dataflow SIGKILLed during a dispatch (its tracking error
after recovery), the whole stack restarted, and the stack starved of CPU.

Slow (minutes of real time): ``pytest -m slow tests/integration/test_chaos.py``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from bench.chaos import ChaosConfig, ChaosHarness, next_minute_ms
from core.waiting import wait_until
from tests.conftest import local_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]

RECOVERY_S = 30.0
#: Mean |target - measured| of a settled closed-loop dispatch, in % of its target.
TRACKING_ERROR_PCT = 10.0


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChaosHarness]:
    from vpp.stack import running

    settings = local_settings(tmp_path_factory.mktemp("chaos"))
    with running(settings) as stack, ChaosHarness(stack, ChaosConfig(sites=200)).running() as h:
        assert h.wait_for_coverage(time.monotonic(), 240) is not None, "the fleet never reached full coverage"
        yield h


def _exact(h: ChaosHarness, after_ms: int) -> None:
    """History over the whole minutes since ``after_ms`` equals brute force over the journal."""
    tally = h.settle(next_minute_ms(h.sim_ms()), after_ms)
    assert tally.readings > 0
    assert (tally.lost, tally.duplicated) == (0, 0), tally.problems[:10]
    assert tally.problems == [], "\n".join(tally.problems[:20])


def test_backfill_reference_sites_cut_off_upload_their_buffers_exactly_once(harness: ChaosHarness) -> None:
    h = harness
    after_ms = next_minute_ms(h.sim_ms())
    cut = [s.site_id for s in h.sites[::10]]  # 10%
    # 75 s of wall time: five simulated minutes, so whole minutes pass with those sites silent.
    fault = h.fault("sites_cut_off", lambda: h.cut_off(cut), 75.0, reported_by=())
    assert fault.recovery_s is not None and fault.recovery_s <= RECOVERY_S
    _exact(h, after_ms)
    assert all(not h.fleet.sites[s].backlog for s in cut), "every buffer was uploaded"


@pytest.mark.parametrize("part", ["redis", "broker"])
def test_a_paused_dependency_is_reported_and_nothing_is_lost(harness: ChaosHarness, part: str) -> None:
    h = harness
    after_ms = next_minute_ms(h.sim_ms())
    fault = h.fault(f"{part}_paused", lambda: h.paused(part), 20.0)
    assert fault.readiness["gateway"], "the gateway said it was ready while it could not work"
    assert fault.readiness["telemetry"], "the telemetry flow said it was ready while it could not work"
    assert fault.recovery_s is not None and fault.recovery_s <= RECOVERY_S, fault
    assert wait_until(h.gateway_ready, 30), "ready again once the dependency answers"
    assert wait_until(h.flow_ready, 30), "the flow is ready again once the dependency answers"
    _exact(h, after_ms)


@pytest.mark.parametrize("part", ["gateway", "telemetry"])
def test_a_killed_part_restarts_and_nothing_is_lost_or_doubled(harness: ChaosHarness, part: str) -> None:
    h = harness
    after_ms = next_minute_ms(h.sim_ms())
    fault = h.fault(f"{part}_killed", lambda: h.killed(part), 15.0, reported_by=(part,))
    assert fault.readiness_reported, "readiness said nothing while the part was dead"
    assert wait_until(h.gateway_ready, 30), "the restarted gateway never said it was ready"
    assert wait_until(h.flow_ready, 60), "the restarted flow never said it was ready"
    assert fault.recovery_s is not None and fault.recovery_s <= RECOVERY_S, fault
    _exact(h, after_ms)


def test_a_starved_stack_recovers_and_nothing_is_lost_or_doubled(harness: ChaosHarness) -> None:
    """60 s with every part of the stack on the CPU a fifth of the time (SIGSTOP/SIGCONT in turn)."""
    h = harness
    after_ms = next_minute_ms(h.sim_ms())
    fault = h.fault("cpu_starved", h.starved, 60.0, reported_by=())
    assert fault.recovery_s is not None and fault.recovery_s <= RECOVERY_S, fault
    assert wait_until(h.gateway_ready, 30) and wait_until(h.flow_ready, 30)
    _exact(h, after_ms)


def test_the_control_flow_killed_during_a_dispatch_resumes_it_and_tracks_the_target(
        harness: ChaosHarness) -> None:
    h = harness
    after_ms = next_minute_ms(h.sim_ms())
    fault = h.dispatch_fault("control_flow_killed", lambda: h.killed("control"), 15.0)
    assert fault.readiness_reported, "the control flow's readiness said nothing while it was dead"
    assert fault.recovery_s is not None and fault.recovery_s <= RECOVERY_S, fault
    assert fault.tracking_error_pct is not None, "no status of the dispatch after the restart"
    assert fault.tracking_error_pct <= TRACKING_ERROR_PCT, fault
    assert wait_until(lambda: h.flow_ready("control"), 60)
    _exact(h, after_ms)


def test_the_whole_stack_restarted_recovers_and_nothing_is_lost_or_doubled(harness: ChaosHarness) -> None:
    """`vpp down` and `vpp up` in effect: the memory-only broker comes back empty. The fault ends when
    every part says it is ready again (as `vpp up` returns); recovery is counted from there."""
    h = harness
    after_ms = next_minute_ms(h.sim_ms())
    fault = h.fault("stack_restarted", h.stack_restarted, 20.0)
    assert fault.readiness_reported
    assert h.startup_s is not None, "the restarted system never said it was ready"
    assert fault.recovery_s is not None and fault.recovery_s <= RECOVERY_S, fault
    assert wait_until(h.gateway_ready, 60) and wait_until(h.flow_ready, 60)
    _exact(h, after_ms)
