"""A dispatch driving a simulated fleet in-process: the control logic's loop without Kafka or Redis.

The twin here is exactly what the telemetry dataflow would write (latest reading per site, status by
silence), built from the simulator's own telemetry, so the pure :class:`operators.dispatch.Dispatch`
can be exercised over minutes of simulated time in well under a second per minute.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from assets.generator import Site, generate_fleet
from core.plausibility import Rules
from edge_gateway.simulator import FaultMix, FleetSimulator
from operators.arbitration import Arbiter
from operators.dispatch import Ack, ControlConfig, Dispatch, Output, Request, TwinSnapshot
from operators.twin import charge_headroom_kwh, energy_available_kwh
from schemas.times import epoch_ms, from_epoch_ms

START = datetime(2026, 7, 1, 17, 0, tzinfo=UTC)
DELAYED_AFTER_MS = 5_000
OFFLINE_AFTER_MS = 60_000


def sites(n: int, seed: int = 1) -> list[Site]:
    fleet = generate_fleet(START, n, seed)
    return [fleet.sites[s] for s in sorted(fleet.sites)]


def request(target_kw: float, minutes: float, sites_: list[Site], strategy: str = "waterfill",
            correction: bool = True, dispatch_id: str = "d-test", priority: int = 0,
            requested_after_ms: int = 0) -> Request:
    start = epoch_ms(START) + 30_000
    return Request(dispatch_id, "CREATE", None, tuple(s.site_id for s in sites_), target_kw, start,
                   start + int(minutes * 60_000), strategy, correction, strategy, "test",
                   start + requested_after_ms, priority)


@dataclass
class Loop:
    """Steps a FleetSimulator once a second; the dispatch sees its twin and gets its commands answered."""

    fleet_sites: list[Site]
    faults: FaultMix = field(default_factory=FaultMix)
    config: ControlConfig = field(default_factory=ControlConfig)
    deliver: Any = None  # optional filter(command) -> bool: False drops the command on the way
    seed: int = 3

    def __post_init__(self) -> None:
        self.sim = FleetSimulator(self.fleet_sites, self.seed, START, self.faults)
        self.latest: dict[str, dict[str, Any]] = {}
        self.now = START
        self.sent: list[dict[str, Any]] = []
        self.truth: list[tuple[int, float]] = []
        self.gone: set[str] = set()
        self.actual: dict[str, float] = {}

    def twin(self) -> TwinSnapshot:
        now_ms = epoch_ms(self.now)
        ids = [s.site_id for s in self.fleet_sites]
        n = len(ids)
        status, active = [""] * n, [""] * n
        battery, energy, headroom, surplus = (np.zeros(n) for _ in range(4))
        for i, site in enumerate(self.fleet_sites):
            reading = self.latest.get(site.site_id)
            if reading is None:
                continue
            age = now_ms - epoch_ms(reading["event_time"])
            status[i] = ("ONLINE" if age < DELAYED_AFTER_MS
                         else "DELAYED" if age < OFFLINE_AFTER_MS else "OFFLINE")
            battery[i] = reading["battery_kw"]
            energy[i] = energy_available_kwh(reading["soc_pct"], site.capacity_kwh, site.reserve_pct)
            headroom[i] = charge_headroom_kwh(reading["soc_pct"], site.capacity_kwh)
            surplus[i] = max(0.0, reading["solar_kw"] - reading["load_kw"])
            active[i] = reading["active_command_id"] or ""
        newest = max((epoch_ms(r["event_time"]) for r in self.latest.values()), default=0)
        return TwinSnapshot(ids, status, battery, np.array([s.max_discharge_kw for s in self.fleet_sites]),
                            np.array([s.max_charge_kw for s in self.fleet_sites]), energy, headroom, surplus,
                            active, newest)

    def step(self) -> None:
        self.now += timedelta(seconds=1)
        for record in self.sim.step(1.0, self.now):
            self.actual[record["site_id"]] = record["battery_kw"]
            if record["site_id"] not in self.gone:
                self.latest[record["site_id"]] = record

    def answer(self, dispatch: Dispatch, out: Output, arbiter: Arbiter | None = None) -> None:
        """Deliver the commands; the acks go back (through the arbiter's checks, when there is one)."""
        for command in out.commands:
            self.sent.append(command)
            if self.deliver is not None and not self.deliver(command):
                continue
            if command["site_id"] in self.gone:
                continue
            wire = {**command, "valid_from": from_epoch_ms(command["valid_from"]),
                    "valid_until": from_epoch_ms(command["valid_until"])}
            ack = self.sim.apply_command(wire, self.now)
            if ack is not None:
                answer = Ack(ack["command_id"], ack["site_id"], ack["status"], ack["reason"],
                             epoch_ms(ack["event_time"]))
                if arbiter is not None:
                    refusal = arbiter.check_ack(answer, Rules(), epoch_ms(self.now))
                    assert refusal is None, f"an honest ack was refused: {refusal}"
                dispatch.on_ack(answer, epoch_ms(self.now))

    def true_kw(self, dispatch: Dispatch) -> float:
        """What the dispatched sites really deliver (the simulator's truth, offline sites included)."""
        total = 0.0
        for site_id in dispatch.slots:
            total += self.actual.get(site_id, 0.0)
        return total

    def run(self, dispatch: Dispatch, seconds: int, drop_at: int | None = None,
            drop_share: float = 0.0) -> None:
        """Run ``seconds``; at ``drop_at`` s a share of the commanded sites goes silent for good."""
        for second in range(seconds):
            self.step()
            now_ms = epoch_ms(self.now)
            if dispatch.needs_members(now_ms):
                self.answer(dispatch, dispatch.activate([s.site_id for s in self.fleet_sites], self.twin(),
                                                        now_ms))
            else:
                self.answer(dispatch, dispatch.tick(now_ms, self.twin()))
            if drop_at is not None and second == drop_at:
                commanded = sorted(dispatch.slots)
                self.gone |= set(commanded[: round(drop_share * len(commanded))])
            self.truth.append((now_ms, self.true_kw(dispatch)))

    def run_all(self, arbiter: Arbiter, seconds: int) -> None:
        """Run ``seconds`` with every dispatch of ``arbiter``, as the control dataflow steps them."""
        members = [s.site_id for s in self.fleet_sites]
        for _ in range(seconds):
            self.step()
            now_ms = epoch_ms(self.now)
            for dispatch in arbiter.in_order():
                if dispatch.needs_members(now_ms):
                    out = dispatch.activate(members, self.twin(), now_ms, arbiter.held(dispatch))
                else:
                    out = dispatch.tick(now_ms, self.twin())
                self.answer(dispatch, out, arbiter)
            arbiter.retire(now_ms)
