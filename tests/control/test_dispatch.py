"""The dispatch state machine over a simulated fleet in-process: delivery, correction, cancel, replace."""

from __future__ import annotations

import statistics

from edge_gateway.simulator import FaultMix
from operators.dispatch import ControlConfig, Dispatch
from tests.control.inprocess import Loop, request, sites

TARGET_KW = 200.0


def _errors(loop: Loop, since_ms: int, target: float) -> float:
    """Mean absolute error of the true delivered power after ``since_ms``, in % of the target."""
    return 100 * statistics.fmean(abs(kw - target) for at, kw in loop.truth if at >= since_ms) / target


def _run(correction: bool) -> tuple[Loop, Dispatch]:
    fleet = sites(100)
    loop = Loop(fleet, FaultMix(noncompliant=0.1))
    dispatch = Dispatch(request(TARGET_KW, 6, fleet, correction=correction), ControlConfig())
    loop.run(dispatch, 300, drop_at=120, drop_share=0.05)
    return loop, dispatch


def test_closed_loop_tracks_the_target_despite_noncompliant_and_vanishing_sites() -> None:
    loop, dispatch = _run(correction=True)
    settled = dispatch.request.start_ms + 90_000
    assert _errors(loop, settled, TARGET_KW) < 2.0
    assert abs(dispatch.measured_kw - TARGET_KW) < 0.02 * TARGET_KW
    assert any(not slot.following for slot in dispatch.slots.values()), "non-compliant sites are spotted"


def test_open_loop_reports_a_larger_error() -> None:
    closed, _ = _run(correction=True)
    opened, dispatch = _run(correction=False)
    settled = dispatch.request.start_ms + 90_000
    assert _errors(opened, settled, TARGET_KW) > 2 * _errors(closed, settled, TARGET_KW)
    status = dispatch.status_record(dispatch.clock_ms)
    assert abs(status["error_kw"]) > 0.02 * TARGET_KW, "the open loop states its error"


def test_a_command_lost_on_the_way_arrives_on_a_retry_and_is_acked_once() -> None:
    fleet = sites(20)
    lost: set[str] = set()

    def first_attempt_lost(command: dict[str, object]) -> bool:
        if command["attempt"] == 1 and len(lost) < 5:
            lost.add(str(command["site_id"]))
            return False
        return True

    loop = Loop(fleet, deliver=first_attempt_lost)
    dispatch = Dispatch(request(30.0, 2, fleet, correction=False), ControlConfig())
    loop.run(dispatch, 60)
    assert len(lost) == 5
    for site_id in lost:
        attempts = [c["attempt"] for c in loop.sent if c["site_id"] == site_id]
        assert attempts[:2] == [1, 2], "a lost command is sent again"
        assert dispatch.slots[site_id].state == "ACCEPTED"
    for site_id, slot in dispatch.slots.items():
        if slot.state == "ACCEPTED":
            sends = [c for c in loop.sent if c["site_id"] == site_id and c["command_id"].endswith("/1")]
            assert sends[-1]["attempt"] == (2 if site_id in lost else 1), "an acked command is not sent again"


def test_nothing_is_sent_after_the_validity_window() -> None:
    fleet = sites(10)
    loop = Loop(fleet, deliver=lambda command: False)  # no site ever hears anything
    dispatch = Dispatch(request(20.0, 1, fleet, correction=False), ControlConfig())
    loop.run(dispatch, 150)
    assert loop.sent, "commands were sent and retried"
    assert all(c["issued_at"] < c["valid_until"] for c in loop.sent)
    retries = [c for c in loop.sent if c["attempt"] > 1]
    assert retries, "unanswered commands are retried"
    assert dispatch.state == "FAILED" and "acknowledged" in dispatch.reason, "no site heard it: it failed"
    assert all(slot.state == "EXPIRED" for slot in dispatch.slots.values())
    gaps = sorted({c["attempt"] for c in loop.sent})
    assert gaps == list(range(1, max(gaps) + 1))


def test_cancel_releases_every_commanded_site() -> None:
    fleet = sites(20)
    loop = Loop(fleet)
    dispatch = Dispatch(request(30.0, 5, fleet), ControlConfig())
    loop.run(dispatch, 60)
    commanded = {s for s, slot in dispatch.slots.items() if slot.state == "ACCEPTED"}
    before = len(loop.sent)
    loop.answer(dispatch, dispatch.cancel(dispatch.clock_ms))
    releases = loop.sent[before:]
    assert {c["site_id"] for c in releases} == commanded
    assert all(c["setpoint_kw"] == 0.0 and c["valid_until"] - c["valid_from"] == 2_000 for c in releases)
    assert dispatch.state == "CANCELLED"
    assert dispatch.status_record(dispatch.clock_ms)["target_kw"] == 0.0


def test_replace_plans_the_new_target() -> None:
    fleet = sites(50)
    loop = Loop(fleet)
    first = request(60.0, 5, fleet)
    dispatch = Dispatch(first, ControlConfig())
    loop.run(dispatch, 30)
    replaced = first.__class__(**{**first.__dict__, "action": "REPLACE", "target_kw": -40.0})
    loop.answer(dispatch, dispatch.replace(replaced, loop.twin(), dispatch.clock_ms))
    setpoints = [slot.setpoint_kw for slot in dispatch.slots.values()]
    assert abs(sum(setpoints) - (-40.0)) < 0.5
    assert all(kw <= 0.0 for kw in setpoints), "a charge target charges"


def test_offline_sites_and_sites_busy_with_another_dispatch_get_nothing() -> None:
    fleet = sites(30)
    loop = Loop(fleet, FaultMix(offline=0.2))
    for _ in range(35):
        loop.step()
    twin = loop.twin()
    twin.active_command[0] = "d-other/x/1"
    dispatch = Dispatch(request(40.0, 5, fleet), ControlConfig())
    out = dispatch.activate(list(twin.site_ids), twin, dispatch.request.start_ms)
    commanded = {c["site_id"] for c in out.commands}
    offline = {s for s, st in zip(twin.site_ids, twin.status, strict=True) if st != "ONLINE"}
    assert len(offline) == 6
    assert not commanded & offline
    assert twin.site_ids[0] not in commanded
    assert abs(sum(c["setpoint_kw"] for c in out.commands) - 40.0) < 1e-6
