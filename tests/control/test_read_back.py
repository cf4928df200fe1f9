"""A dispatch resumed from a snapshot catches up with what it sent after that snapshot.

The control flow reads its own commands back from ``commands.site``; a flow
killed after sending and before snapshotting resumes from offsets older than
those commands, so it reads them back. Here the same happens in-process: a
dispatch runs on a simulated fleet, its state is snapshotted as the flow
snapshots it, it runs on; the restored copy is then given what was sent (and
answered) after the snapshot, in order.
"""

from __future__ import annotations

import zlib
from dataclasses import astuple, replace
from typing import Any

from edge_gateway.simulator import FaultMix
from operators.control_state import dispatch_state, restore_dispatch
from operators.dispatch import Ack, ControlConfig, Dispatch, Output, Sent, Slot
from schemas.times import epoch_ms
from tests.control.inprocess import Loop, request, sites

Event = Sent | Ack


def _sent(command: dict[str, Any]) -> Sent:
    return Sent(command["command_id"], command["dispatch_id"], command["site_id"], command["setpoint_kw"],
                command["valid_from"], command["valid_until"], command["attempt"], command["issued_at"])


def _delivery(slot: Slot) -> tuple[Any, ...]:
    """What a slot holds of its command and its answer (whether the site follows it is the twin's word,
    which a restored dispatch learns from its next twin read)."""
    return astuple(replace(slot, following=True))


def _run_on(loop: Loop, dispatch: Dispatch, seconds: int) -> list[Event]:
    """Run ``seconds`` more; what the topic and the devices said meanwhile, in the order they said it."""
    events: list[Event] = []
    on_ack = dispatch.on_ack

    def recording(ack: Ack, now_ms: int) -> Output:
        events.append(ack)
        return on_ack(ack, now_ms)

    dispatch.on_ack = recording  # type: ignore[method-assign]
    for _ in range(seconds):
        loop.step()
        out = dispatch.tick(epoch_ms(loop.now), loop.twin())
        events += [_sent(c) for c in out.commands]
        loop.answer(dispatch, out)
    return events


def _snapshot_then_run_on(seconds_before: int, seconds_after: int) -> tuple[Dispatch, Dispatch, list[Event]]:
    fleet = sites(60)
    # A third of the sites lose the first attempt of every command (a retry gets through).
    loop = Loop(fleet, FaultMix(noncompliant=0.15),
                deliver=lambda c: c["attempt"] > 1 or zlib.crc32(c["site_id"].encode()) % 3 != 0)
    dispatch = Dispatch(request(150.0, 10, fleet), ControlConfig())
    loop.run(dispatch, seconds_before, drop_at=seconds_before - 3, drop_share=0.1)
    restored = restore_dispatch(dispatch_state(dispatch), dispatch.config)
    return dispatch, restored, _run_on(loop, dispatch, seconds_after)


def test_a_restored_dispatch_that_reads_back_what_was_sent_holds_what_the_running_one_holds() -> None:
    running, restored, events = _snapshot_then_run_on(36, 60)
    sent = [e for e in events if isinstance(e, Sent)]
    assert any(s.revision > 1 for s in sent), "corrections after the snapshot issued new revisions"
    assert any(s.attempt > 1 for s in sent), "retries after the snapshot"
    journal = []
    for event in events:
        if isinstance(event, Sent):
            out = restored.on_sent(event, event.issued_ms)
            assert not out.commands, "nothing to send again: the restored state only catches up"
            journal += out.command_log
        else:
            restored.on_ack(event, event.event_ms)
    assert {site: _delivery(slot) for site, slot in restored.slots.items()} == {
        site: _delivery(slot) for site, slot in running.slots.items()}
    assert journal == [s.journal_row() for s in sent], "one SENT row per command read back, as it was sent"


def test_an_id_the_restored_dispatch_gave_to_another_command_is_followed_by_a_new_revision() -> None:
    _, restored, events = _snapshot_then_run_on(36, 60)
    newer = {s.site_id: s for s in events if isinstance(s, Sent)}
    # Before reading anything back, the restored dispatch is cancelled: its releases (0 kW) reuse the
    # revisions the running one gave its own commands after the snapshot.
    releases = {c["site_id"]: c for c in restored.cancel(restored.clock_ms).commands}
    reused = {site for site, s in newer.items()
              if site in releases and releases[site]["command_id"] == s.command_id}
    assert reused, "some ids were given to two commands"
    for site in reused:
        out = restored.on_sent(newer[site], restored.clock_ms)
        [again] = out.commands
        assert again["command_id"].rsplit("/", 1)[1] == str(newer[site].revision + 1)
        assert again["setpoint_kw"] == 0.0, "the restored dispatch's own command goes out again"
    untouched = next(site for site in releases if site not in newer)
    release = releases[untouched]
    assert not restored.on_sent(_sent(release), restored.clock_ms).commands, "its own command read back"
