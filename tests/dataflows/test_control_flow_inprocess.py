"""The control dataflow's own wiring, run in this process: TestingSource in, TestingSinks out.

The input is a generator: requests first, then (after a pause in which the
flow's ticks activate the dispatches) an ACCEPTED ack for every command the
flow has sent so far, as devices would answer. The twin the flow plans from is
a fixed fleet given through the flow's ``reader`` argument (no Redis), read on the input's own
thread (never in the control step). The input
pauses while it waits for what the flow has sent, so no wall-clock guess decides
when the flow has got there. The
reference is computed by brute force from that fleet: every commanded site is
a member with headroom, setpoints stay within each site's limits, each
dispatch's setpoints add up to its target, two dispatches share no site, and
every command ends acknowledged in the statuses and the journal.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from bytewax.connectors.kafka import KafkaSinkMessage
from bytewax.testing import TestingSink, TestingSource, cluster_main, run_main
from confluent_kafka import Message

from core.config import Settings
from core.rows import CommandLogEntry, DispatchLogEntry
from core.topics import COMMANDS_ACKS, COMMANDS_SITE, DISPATCH_REQUESTS
from dataflows.control import ControlSinks, build_flow
from operators.dispatch import Request, TwinSnapshot
from operators.kafka_batches import Polled
from operators.sinks import StatusWrite
from schemas import packaged_codec
from schemas.times import epoch_ms

SITES = [f"site-{i:02d}" for i in range(40)]
DISCHARGE_KW = np.array([3.0 + (i % 3) * 2.0 for i in range(len(SITES))])  # 3, 5 or 7 kW
TARGETS = {"d-first": 40.0, "d-second": 30.0}


#: The threads the twin was read on (the control step must not read it on the worker thread).
READ_ON: set[str] = set()


class FixedTwin:
    """A feeder of 40 idle ONLINE sites with energy to spare, as the control step reads a twin."""

    def members(self, node_id: str) -> list[str]:
        READ_ON.add(threading.current_thread().name)
        return SITES if node_id == "feeder-0" else []

    def fleet_time(self, request: Request) -> int:
        READ_ON.add(threading.current_thread().name)
        return epoch_ms(datetime.now(UTC))

    def snapshot(self, site_ids: list[str]) -> TwinSnapshot:
        READ_ON.add(threading.current_thread().name)
        index = [SITES.index(s) for s in site_ids]
        n = len(site_ids)
        return TwinSnapshot(list(site_ids), ["ONLINE"] * n, np.zeros(n), DISCHARGE_KW[index],
                            DISCHARGE_KW[index], np.full(n, 8.0), np.full(n, 4.0), np.zeros(n), [""] * n,
                            epoch_ms(datetime.now(UTC)))


@dataclass
class Captured:
    kafka: list[KafkaSinkMessage[Any, Any]] = field(default_factory=list)
    statuses: list[StatusWrite] = field(default_factory=list)
    journal: list[tuple[str, Any]] = field(default_factory=list)
    #: The commands handed back to the flow on commands.site.
    read_back: list[dict[str, Any]] = field(default_factory=list)

    def sinks(self) -> ControlSinks:
        return ControlSinks(TestingSink(self.kafka), TestingSink(self.statuses), TestingSink(self.journal))

    def commands(self) -> list[dict[str, Any]]:
        codec = packaged_codec()
        return [codec.decode(m.value, "SiteCommand") for m in list(self.kafka) if m.topic == COMMANDS_SITE]


def _message(topic: str, key: str, value: bytes, offset: int) -> Message:
    return Message(topic=topic, partition=0, offset=offset, key=key.encode(), value=value, timestamp=(1, 0))


def _input(captured: Captured) -> Iterator[Polled | TestingSource.PAUSE]:
    codec, now = packaged_codec(), datetime.now(UTC)
    requests = [_message(DISPATCH_REQUESTS, ident, codec.encode("DispatchRequest", {
        "dispatch_id": ident, "action": "CREATE", "node_id": "feeder-0", "site_ids": None, "target_kw": kw,
        "start": now + timedelta(milliseconds=100), "end": now + timedelta(minutes=30),
        "strategy": "waterfill-open-loop", "requested_by": "test",
        "requested_at": now + timedelta(milliseconds=i), "priority": 0}), i)
        for i, (ident, kw) in enumerate(TARGETS.items())]
    yield Polled(DISPATCH_REQUESTS, 0, requests)
    # Pause (the flow ticks on) until both dispatches have commanded their sites.
    yield from _pause_until(lambda: {c["dispatch_id"] for c in captured.commands()} == set(TARGETS))
    # The flow reads its own commands back from commands.site, as Kafka would hand them to it.
    sent = [m for m in list(captured.kafka) if m.topic == COMMANDS_SITE]
    captured.read_back = [codec.decode(m.value, "SiteCommand") for m in sent]
    yield Polled(COMMANDS_SITE, 0, [_message(COMMANDS_SITE, m.key.decode(), m.value, i)
                                    for i, m in enumerate(sent)])
    acks = [_message(COMMANDS_ACKS, c["site_id"], codec.encode("CommandAck", {
        "command_id": c["command_id"], "site_id": c["site_id"], "status": "ACCEPTED", "reason": None,
        "event_time": datetime.now(UTC)}), i) for i, c in enumerate(captured.commands())]
    yield Polled(COMMANDS_ACKS, 0, acks)
    yield from _pause_until(lambda: _all_acked(captured))


def _pause_until(condition: Callable[[], bool], budget_s: float = 60.0) -> Iterator[TestingSource.PAUSE]:
    """Short pauses of the input while the flow runs on, until ``condition`` holds (or the budget ends)."""
    deadline = time.monotonic() + budget_s
    while not condition() and time.monotonic() < deadline:
        yield TestingSource.PAUSE(timedelta(milliseconds=50))


def _all_acked(captured: Captured) -> bool:
    latest = {w.dispatch_id: w.fields for w in list(captured.statuses)}
    return set(latest) == set(TARGETS) and all(f["sites_pending"] == 0 and f["sites_acked"] > 0
                                               for f in latest.values())


def _run(workers: int) -> Captured:
    captured = Captured()
    READ_ON.clear()
    settings = Settings(control_tick_s=0.05, control_correction_s=0.2)  # statuses every 0.2 s
    flow = build_flow(settings, TestingSource(_input(captured)), captured.sinks(), reader=FixedTwin)
    if workers == 1:
        run_main(flow)  # type: ignore[no-untyped-call]
    else:
        cluster_main(flow, [], 0, worker_count_per_proc=workers)  # type: ignore[no-untyped-call]
    return captured


@pytest.mark.parametrize("workers", [1, 2])
def test_two_dispatches_on_one_feeder_get_disjoint_sites_within_limits_and_all_acks(workers: int) -> None:
    captured = _run(workers)
    assert {"control-twin-reads"} == READ_ON, "the twin is read by the input's thread, not in the step"
    commands = captured.commands()
    by_dispatch: dict[str, dict[str, float]] = {}
    for command in commands:
        by_dispatch.setdefault(command["dispatch_id"], {})[command["site_id"]] = command["setpoint_kw"]
    assert set(by_dispatch) == set(TARGETS)
    first, second = (set(by_dispatch[d]) for d in TARGETS)
    assert not first & second, "a site follows at most one dispatch"
    for ident, setpoints in by_dispatch.items():
        assert sum(setpoints.values()) == pytest.approx(TARGETS[ident], abs=1e-6)
        for site, kw in setpoints.items():
            assert 0 < kw <= DISCHARGE_KW[SITES.index(site)] + 1e-9, (ident, site, kw)

    final = {w.dispatch_id: w for w in captured.statuses}
    for ident, setpoints in by_dispatch.items():
        fields = final[ident].fields
        assert fields["state"] == "ACTIVE"
        assert (fields["sites_total"], fields["sites_acked"], fields["sites_pending"]) == (
            len(setpoints), len(setpoints), 0)
    journal = [row for _, row in captured.journal]
    assert {r.dispatch_id for r in journal if isinstance(r, DispatchLogEntry)} == set(TARGETS)
    accepted = {r.command_id for r in journal if isinstance(r, CommandLogEntry) and r.status == "ACCEPTED"}
    assert accepted == {c["command_id"] for c in commands}
    sent = [r for r in journal if isinstance(r, CommandLogEntry) and r.status == "SENT"]
    assert captured.read_back, "commands were read back"
    assert sorted((r.command_id, r.attempt, r.setpoint_kw, r.event_time) for r in sent) == sorted(
        (c["command_id"], c["attempt"], c["setpoint_kw"], c["issued_at"]) for c in captured.read_back), (
        "the journal's SENT rows are the commands read back, once each")
