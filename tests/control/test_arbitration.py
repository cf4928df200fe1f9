"""Several dispatches, one arbiter: disjoint sites, the loser plans around them, forged acks, reused ids."""

from __future__ import annotations

import pytest

from core.plausibility import FUTURE_EVENT_TIME, Rules
from operators.arbitration import DISPATCH_ID_REUSED, Arbiter, Refusal
from operators.dispatch import NOT_THE_COMMANDED_SITE, UNKNOWN_COMMAND, Ack, ControlConfig, Dispatch
from tests.control.inprocess import Loop, request, sites

YEAR_MS = 365 * 24 * 3_600_000


def _created(arbiter: Arbiter, *args: object, **kwargs: object) -> Dispatch:
    created = arbiter.create(request(*args, **kwargs))  # type: ignore[arg-type]
    assert isinstance(created, Dispatch)
    return created


def test_two_concurrent_dispatches_on_one_node_share_no_site_and_each_counts_only_its_own() -> None:
    """The issue's case: two 20 kW dispatches on one 128-site feeder, submitted together."""
    fleet = sites(128)
    loop = Loop(fleet)
    arbiter = Arbiter(ControlConfig())
    first = _created(arbiter, 20.0, 4, fleet, dispatch_id="d-a")
    second = _created(arbiter, 20.0, 4, fleet, dispatch_id="d-b", requested_after_ms=1)
    loop.run_all(arbiter, 150)

    a, b = set(first.slots), set(second.slots)
    assert a and b, "both got sites"
    assert not a & b, "no site follows two dispatches"
    assert all(c["site_id"] in (a if c["dispatch_id"] == "d-a" else b) for c in loop.sent)
    twin = loop.twin()
    commanded = sum(float(twin.battery_kw[twin.index[s]]) for s in a | b)
    assert first.measure(twin) + second.measure(twin) == pytest.approx(commanded, abs=1e-9)
    for dispatch, own in ((first, a), (second, b)):
        status = dispatch.status_record(dispatch.clock_ms)
        assert status["sites_total"] == len(own), "a status counts only its own sites"
        assert status["state"] == "ACTIVE"
        assert loop.true_kw(dispatch) == pytest.approx(20.0, rel=0.05), "each really delivers its target"
    assert loop.true_kw(first) + loop.true_kw(second) == pytest.approx(40.0, rel=0.05)


def test_the_loser_plans_around_the_held_sites_or_is_refused_when_none_are_left() -> None:
    fleet = sites(20)
    loop = Loop(fleet)
    greedy = Arbiter(ControlConfig(claim_margin=0.0))  # the first claims every free site
    first = _created(greedy, 10.0, 3, fleet, dispatch_id="d-first")
    late = _created(greedy, 10.0, 3, fleet, dispatch_id="d-late", requested_after_ms=5)
    loop.run_all(greedy, 40)
    assert first.state == "ACTIVE" and first.slots
    assert late.state == "FAILED" and not late.slots
    assert "every member site follows another dispatch (d-first)" in late.reason

    arbiter = Arbiter(ControlConfig())
    first = _created(arbiter, 10.0, 3, fleet, dispatch_id="d-first")
    late = _created(arbiter, 10.0, 3, fleet, dispatch_id="d-late", requested_after_ms=5)
    Loop(fleet).run_all(arbiter, 40)
    assert late.state == "ACTIVE" and late.slots and not set(late.slots) & first.claimed
    status = late.status_record(late.clock_ms)
    assert status["sites_unavailable"] == len(first.claimed) > 0, "told how many it could not have"
    assert "follow another dispatch (d-first): planned around them" in late.reason
    assert sorted(first.claimed)[0] in late.reason, "and which they are"
    assert first.status_record(first.clock_ms)["sites_unavailable"] == 0


def test_priority_then_first_come_decides_who_claims_first() -> None:
    fleet = sites(10)
    arbiter = Arbiter(ControlConfig(claim_margin=0.0))
    early = _created(arbiter, 5.0, 2, fleet, dispatch_id="d-early")
    urgent = _created(arbiter, 5.0, 2, fleet, dispatch_id="d-urgent", priority=10, requested_after_ms=9)
    later = _created(arbiter, 5.0, 2, fleet, dispatch_id="d-later", requested_after_ms=5)
    assert [d.request.dispatch_id for d in arbiter.in_order()] == ["d-urgent", "d-early", "d-later"]
    Loop(fleet).run_all(arbiter, 35)
    assert urgent.state == "ACTIVE" and urgent.slots
    assert early.state == later.state == "FAILED"


def test_a_finished_dispatch_frees_its_sites() -> None:
    fleet = sites(10)
    loop = Loop(fleet)
    arbiter = Arbiter(ControlConfig(claim_margin=0.0))
    first = _created(arbiter, 5.0, 0.5, fleet, dispatch_id="d-short")
    loop.run_all(arbiter, 70)
    assert first.state in ("COMPLETED", "PARTIAL") and "d-short" not in arbiter.dispatches
    after = request(5.0, 2, fleet, dispatch_id="d-after")
    after = after.__class__(**{**after.__dict__, "start_ms": after.start_ms + 60_000,
                               "end_ms": after.end_ms + 60_000})
    second = arbiter.create(after)
    assert isinstance(second, Dispatch)
    loop.run_all(arbiter, 30)
    assert second.state == "ACTIVE" and set(second.slots) & set(first.slots)


def test_a_dispatch_starting_as_another_ends_takes_over_its_sites() -> None:
    """A peak plan's back-to-back intervals: the next dispatch starts the instant the last one ends.

    In the dataflow each dispatch's clock moves with its own twin reads, so the ending one may not
    have seen its end yet, and the twin read at the start may still show its commands (a reading
    taken just before the end). Neither keeps the sites from the dispatch that starts.
    """
    fleet = sites(10)
    loop = Loop(fleet)
    arbiter = Arbiter(ControlConfig(claim_margin=0.0))
    first = _created(arbiter, 5.0, 1, fleet, dispatch_id="d-first")
    shaped = request(5.0, 1, fleet, dispatch_id="d-next", requested_after_ms=1)
    second = arbiter.create(shaped.__class__(**{**shaped.__dict__, "start_ms": first.request.end_ms,
                                                "end_ms": first.request.end_ms + 60_000}))
    assert isinstance(second, Dispatch)
    while loop.now.timestamp() * 1000 < first.request.end_ms - 1_000:
        loop.run_all(arbiter, 1)
    assert first.state == "ACTIVE" and first.slots
    stale = loop.twin()  # read a second before the end: the sites still follow d-first's commands
    assert any(c.startswith("d-first/") for c in stale.active_command)
    now_ms = first.request.end_ms
    out = second.activate([s.site_id for s in fleet], stale, now_ms, arbiter.held(second, now_ms),
                          arbiter.lapsed(now_ms))
    assert first.state == "ACTIVE", "the first has not seen its end: its clock lags"
    assert second.state == "ACTIVE" and not second.unavailable, second.reason
    assert set(second.slots) & set(first.slots), "it commands the sites the first one had"
    assert sum(c["setpoint_kw"] for c in out.commands) == pytest.approx(5.0)


def _active(fleet_size: int = 10) -> tuple[Loop, Arbiter, Dispatch]:
    fleet = sites(fleet_size)
    loop = Loop(fleet)
    arbiter = Arbiter(ControlConfig())
    dispatch = _created(arbiter, 5.0, 5, fleet, dispatch_id="d-1")
    loop.run_all(arbiter, 35)
    assert dispatch.state == "ACTIVE"
    return loop, arbiter, dispatch


def test_a_forged_ack_neither_completes_the_dispatch_nor_moves_its_clock() -> None:
    """Case 6: an outside site acks the dispatch's command id with a time a year ahead."""
    loop, arbiter, dispatch = _active()
    commanded = sorted(dispatch.slots)[0]
    outsider = "site-outside"
    clock = dispatch.clock_ms
    forged = Ack(f"d-1/{commanded}/1", outsider, "ACCEPTED", None, clock + YEAR_MS)
    refusal = arbiter.check_ack(forged, Rules(), clock)
    assert refusal == Refusal(NOT_THE_COMMANDED_SITE, refusal.detail if refusal else "")
    loop.run_all(arbiter, 3)
    assert dispatch.state == "ACTIVE"
    assert dispatch.clock_ms < clock + 10_000, "the clock never moved on the forged ack's word"
    assert dispatch.acks_refused == 1 and arbiter.refused[NOT_THE_COMMANDED_SITE] == 1


@pytest.mark.parametrize(("command", "offset_ms", "kind"), [
    ("d-1/{site}/1", YEAR_MS, FUTURE_EVENT_TIME),     # the right site, a poisoned time
    ("d-1/{site}/99", 0, UNKNOWN_COMMAND),            # a revision never sent
    ("d-1/{site}", 0, UNKNOWN_COMMAND),               # not a command id
    ("d-other/{site}/1", 0, UNKNOWN_COMMAND),         # no such dispatch
])
def test_acks_count_only_for_a_command_sent_to_that_site_at_a_plausible_time(
        command: str, offset_ms: int, kind: str) -> None:
    _, arbiter, dispatch = _active()
    site = sorted(dispatch.slots)[0]
    now = dispatch.clock_ms
    forged = Ack(command.format(site=site), site, "REJECTED", "x", now + offset_ms)
    refusal = arbiter.check_ack(forged, Rules(), now)
    assert refusal is not None and refusal.kind == kind
    assert arbiter.refused[kind] == 1
    current = f"d-1/{site}/{dispatch.slots[site].revision}"
    honest = arbiter.check_ack(Ack(current, site, "ACCEPTED", None, now), Rules(), now)
    assert honest is None


def test_a_reused_dispatch_id_is_refused_and_the_first_keeps_running() -> None:
    """Case 8, in the dataflow: a second CREATE under a running (or finished) dispatch's id."""
    fleet = sites(10)
    loop = Loop(fleet)
    arbiter = Arbiter(ControlConfig())
    first = _created(arbiter, 5.0, 0.75, fleet, dispatch_id="d-1")
    loop.run_all(arbiter, 35)
    again = request(9.0, 3, fleet, dispatch_id="d-1", requested_after_ms=20_000)
    refused = arbiter.create(again)
    assert isinstance(refused, Refusal) and refused.kind == DISPATCH_ID_REUSED
    assert arbiter.create(first.request) is None, "the same request replayed is no second dispatch"
    assert arbiter.dispatches["d-1"] is first and first.request.target_kw == 5.0
    loop.run_all(arbiter, 40)
    assert first.state in ("COMPLETED", "PARTIAL") and "d-1" not in arbiter.dispatches
    assert isinstance(arbiter.create(again), Refusal), "a finished dispatch's id stays used"
    assert arbiter.refused[DISPATCH_ID_REUSED] == 2
