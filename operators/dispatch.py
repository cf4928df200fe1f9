"""One dispatch from request to end: allocate, deliver commands until acknowledged, correct the error.

Pure logic, no I/O: the control dataflow (``operators/control_steps.py``) feeds
it requests, acks, member lists and twin snapshots, and sends what it returns.
Time is whatever the caller says ``now`` is (the event-time clock of the
fleet), so a simulated fleet running faster than the wall clock is controlled
in its own time, and a test can step it by hand.

The life of a dispatch:

* PENDING until its window starts, then ACTIVE: the planner reads the twin of
  the member sites and skips sites that are not ONLINE, that another dispatch
  holds (the caller says which: :mod:`operators.arbitration` decides), or
  that follow another dispatch's command by the twin. Of the rest it *claims*
  just enough, most capable first, to cover ``claim_margin`` times the target
  (room for correction), so the other sites of the node stay free for other
  dispatches; the allocator (water-filling or QP) spreads the target over the
  claimed sites within each site's power limits and the energy it has above
  its reserve (or below full) for the rest of the window. Each site with a
  share worth a command gets a SiteCommand valid until the window ends. A
  dispatch whose members are all held by others FAILS with a reason; one that
  lost some of them says how many (``sites_unavailable``) and plans around
  them.
* Acks bind to their command: :meth:`Dispatch.bound` accepts an ack only from
  the site the command was sent to, for a revision this dispatch issued. An
  ack never moves the dispatch's clock (its time is the device's word; the
  caller bounds it and journals it).
* Delivery: a command not acknowledged is sent again (same id, next attempt)
  with exponential backoff until it is acknowledged, rejected, or its window
  has passed; nothing is sent after ``valid_until``.
* The journal of sent commands is what ``commands.site`` holds: the flow reads
  its commands back (:meth:`Dispatch.on_sent`), which is also how a flow
  resumed from a snapshot learns what it sent after that snapshot.
* Correction (unless the strategy is open loop): every ``correction_ms`` the
  measured power of the dispatched sites (the twin's latest battery power; a
  site that went quiet counts with its last known value, which is what it is
  most likely still doing) is compared with the target. A step of ``gain``
  times the error, at most ``max_step_fraction`` of the target, goes to the
  sites that accepted their command, are following it and have room, largest
  room first (few new commands); an overshoot is taken back from the largest
  setpoints. The sum of setpoints is the controller's integrator: it can never
  leave [0, what the sites can do], which is the anti-windup.
* A site that acknowledged but whose power stays away from its setpoint is
  marked as not following and gets no further correction share: the error it
  leaves is covered by the others.
* CANCEL releases every commanded site (a 0 kW command that lapses after
  ``release_ms``, after which the device returns to its own plan); REPLACE
  re-plans with the new target and window.
* The window's end judges it (:mod:`operators.outcome`): COMPLETED only if the
  energy delivered is within ``outcome_tolerance`` of the energy requested,
  PARTIAL or FAILED with the reason otherwise. A dispatch that finds no site it
  can command when its window starts FAILS at once, saying why.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Any

import numpy as np

from core.rows import CommandLogEntry
from operators.allocation import Allocation, Array, Fleet, qp_allocate, waterfill
from operators.outcome import DEFAULT_TOLERANCE, Outcome, Sample, judge
from schemas.times import from_epoch_ms

TERMINAL = frozenset({"COMPLETED", "PARTIAL", "CANCELLED", "FAILED"})
MS_PER_HOUR = 3_600_000
ALLOCATORS = {"waterfill": waterfill, "qp": qp_allocate}


@dataclass(frozen=True)
class ControlConfig:
    """Timings and gains of delivery and correction (event-time milliseconds)."""

    retry_base_ms: int = 2_000
    retry_max_ms: int = 30_000
    correction_ms: int = 5_000
    gain: float = 0.7
    max_step_fraction: float = 0.25
    #: A dispatch claims sites until their limits cover this many times its target (0: every free site).
    claim_margin: float = 2.0
    min_command_kw: float = 0.05
    follow_tolerance_kw: float = 0.3
    follow_tolerance_fraction: float = 0.2
    release_ms: int = 2_000
    #: COMPLETED needs the delivered energy within this fraction of the requested energy.
    outcome_tolerance: float = DEFAULT_TOLERANCE


@dataclass(frozen=True)
class Request:
    """A decoded DispatchRequest, times as epoch ms."""

    dispatch_id: str
    action: str
    node_id: str | None
    site_ids: tuple[str, ...] | None
    target_kw: float
    start_ms: int
    end_ms: int
    allocator: str
    correction: bool
    strategy: str
    requested_by: str
    requested_ms: int
    #: Arbitration: a higher priority is served first among dispatches starting together.
    priority: int = 0


@dataclass(frozen=True)
class Ack:
    """A decoded CommandAck."""

    command_id: str
    site_id: str
    status: str
    reason: str | None
    event_ms: int


@dataclass(frozen=True)
class Sent:
    """A SiteCommand as the control flow reads it back from ``commands.site``: what was really sent."""

    command_id: str
    dispatch_id: str
    site_id: str
    setpoint_kw: float
    valid_from_ms: int
    valid_until_ms: int
    attempt: int
    issued_ms: int

    @property
    def revision(self) -> int:
        return int(self.command_id.rsplit("/", 1)[1])

    def journal_row(self) -> CommandLogEntry:
        """Its ``command_log`` row (status SENT): the journal of sent commands is what the topic holds."""
        return CommandLogEntry(self.command_id, self.dispatch_id, self.site_id, self.setpoint_kw,
                               _dt(self.valid_from_ms), _dt(self.valid_until_ms), self.attempt, "SENT",
                               _dt(self.issued_ms))


@dataclass(frozen=True)
class TwinSnapshot:
    """What the live twin says about the dispatch's member sites, as parallel arrays in member order."""

    site_ids: list[str]
    status: list[str]
    battery_kw: Array
    max_discharge_kw: Array
    max_charge_kw: Array
    energy_available_kwh: Array
    headroom_kwh: Array
    solar_surplus_kw: Array
    active_command: list[str]
    newest_event_ms: int

    @cached_property
    def index(self) -> dict[str, int]:
        """Position of each site in the arrays."""
        return {site_id: i for i, site_id in enumerate(self.site_ids)}

    def online(self) -> np.ndarray[Any, np.dtype[np.bool_]]:
        return np.array([s == "ONLINE" for s in self.status], dtype=bool)


@dataclass(slots=True)
class Slot:
    """One site's part in the dispatch: its current command and what became of it."""

    setpoint_kw: float = 0.0
    revision: int = 0
    attempt: int = 0
    valid_from_ms: int = 0
    valid_until_ms: int = 0
    next_retry_ms: int = 0
    state: str = "PENDING"  # PENDING, ACCEPTED, REJECTED, EXPIRED (a slot exists once its site is commanded)
    accepted_ms: int = 0
    following: bool = True


@dataclass
class Output:
    """What one step asks the dataflow to send."""

    commands: list[dict[str, Any]] = field(default_factory=list)
    statuses: list[dict[str, Any]] = field(default_factory=list)
    command_log: list[CommandLogEntry] = field(default_factory=list)


def command_id(dispatch_id: str, site_id: str, revision: int) -> str:
    """``{dispatch}/{site}/{revision}``: an ack names its dispatch, which is how acks find their state."""
    return f"{dispatch_id}/{site_id}/{revision}"


#: Why an ack is not counted (DeadLetter ``error_kind``).
UNKNOWN_COMMAND = "UNKNOWN_COMMAND"
NOT_THE_COMMANDED_SITE = "NOT_THE_COMMANDED_SITE"


def dispatch_of(command: str) -> str:
    """The dispatch id a command id belongs to (dispatch ids never contain ``/``)."""
    return command.split("/", 1)[0]


class Dispatch:
    """The state of one dispatch (held by the arbiter, snapshotted with it by the dataflow)."""

    def __init__(self, request: Request, config: ControlConfig) -> None:
        self.request = request
        self.config = config
        self.state = "PENDING"
        self.reason = ""
        self.members: list[str] = []
        self.slots: dict[str, Slot] = {}
        self.clock_ms = request.requested_ms
        self.next_correction_ms = 0
        self.next_status_ms = 0
        self.measured_kw = 0.0
        self.shortfall_kw = 0.0
        #: Sites this dispatch holds: it commands no other, and no other dispatch may command them.
        self.claimed: set[str] = set()
        #: Member sites another dispatch held when this one planned: site -> that dispatch.
        self.unavailable: dict[str, str] = {}
        #: Acks naming this dispatch that were not counted (wrong site, unknown revision, implausible time).
        self.acks_refused = 0
        #: One per status published while ACTIVE (its dispatch_log rows): what the outcome is judged on.
        self.samples: list[Sample] = []
        #: The figures so far; the verdict once the window is over.
        self.outcome: Outcome | None = None

    # ----------------------------------------------------------------- inputs

    def needs_members(self, now_ms: int) -> bool:
        """Whether the window has started and the members are still to be resolved."""
        return self.state == "PENDING" and now_ms >= self.request.start_ms

    def activate(self, members: list[str], twin: TwinSnapshot, now_ms: int,
                 held: Mapping[str, str] | None = None, lapsed: frozenset[str] = frozenset()) -> Output:
        """Start the window: claim sites of ``members`` not ``held`` (site -> its dispatch), command them.

        ``lapsed``: dispatches whose commands are over (:meth:`operators.arbitration.Arbiter.lapsed`).
        """
        out = Output()
        self._advance(now_ms, twin)
        if not members:
            self.state, self.reason = "FAILED", "the node has no member sites at the start of the window"
            return self._status(out, now_ms)
        self.members = members
        held = held or {}
        self.unavailable = {site_id: held[site_id] for site_id in members if site_id in held}
        if len(self.unavailable) == len(members):
            self.state, self.reason = "FAILED", (f"every member site follows another dispatch "
                                                 f"({_names(self.unavailable.values())})")
            return self._status(out, now_ms)
        if self.unavailable:
            self.reason = (f"{len(self.unavailable)} of {len(members)} member sites "
                           f"({_names(self.unavailable.keys())}) follow another dispatch "
                           f"({_names(self.unavailable.values())}): planned around them")
        self.state = "ACTIVE"
        self._claim(twin, now_ms, held, lapsed)
        self._plan(twin, now_ms, out, lapsed)
        if not self.slots:
            why = self._why_no_site(twin)
            self.outcome = self._judge(self.request.end_ms, why)
            self.state, self.reason = "FAILED", self.outcome.reason
            return self._status(out, now_ms)
        self.next_correction_ms = now_ms + self.config.correction_ms
        return self._status(out, now_ms)

    def fail(self, reason: str, now_ms: int) -> Output:
        self.state, self.reason = "FAILED", reason
        self.outcome = self._judge(self.request.end_ms, reason)
        return self._status(Output(), now_ms)

    def replace(self, request: Request, twin: TwinSnapshot | None, now_ms: int,
                held: Mapping[str, str] | None = None, lapsed: frozenset[str] = frozenset()) -> Output:
        """New target and window; an active dispatch claims more free sites if it needs them, plans again."""
        self.request = request
        out = Output()
        if self.state == "ACTIVE" and twin is not None:
            self._advance(now_ms, twin)
            self._claim(twin, now_ms, held or {}, lapsed)
            self._plan(twin, now_ms, out, lapsed)
        return self._status(out, now_ms)

    def cancel(self, now_ms: int) -> Output:
        """Release every commanded site and stop."""
        out = Output()
        if self.state in TERMINAL:
            return out
        for site_id, slot in self.slots.items():
            if slot.state in ("PENDING", "ACCEPTED"):
                self._command(site_id, slot, 0.0, now_ms, now_ms + self.config.release_ms, out)
        self.outcome = self._judge(now_ms)
        self.state = "CANCELLED"
        return self._status(out, now_ms)

    def bound(self, ack: Ack) -> tuple[str, str] | None:
        """None if ``ack`` answers a command this dispatch sent to the acking site; else (kind, why not)."""
        parts = ack.command_id.split("/")
        if len(parts) != 3 or parts[0] != self.request.dispatch_id or not parts[2].isdigit():
            return UNKNOWN_COMMAND, f"{ack.command_id!r} is not a command id of {self.request.dispatch_id!r}"
        if parts[1] != ack.site_id:
            return NOT_THE_COMMANDED_SITE, (f"{ack.site_id!r} acked {ack.command_id!r}, a command sent to "
                                            f"{parts[1]!r}")
        slot = self.slots.get(ack.site_id)
        if slot is None or not 1 <= int(parts[2]) <= slot.revision:
            return UNKNOWN_COMMAND, f"{ack.command_id!r} was never sent: no such revision for {ack.site_id!r}"
        return None

    def on_ack(self, ack: Ack, now_ms: int) -> Output:
        """Record a device's answer to our command (answers to superseded commands are only logged).

        The caller has checked it (:meth:`bound`, and its event time); the ack's time is journaled but
        does not move the dispatch's clock.
        """
        out = Output()
        parts = ack.command_id.split("/")
        slot = self.slots.get(ack.site_id)
        out.command_log.append(self._journal(ack.command_id, ack.site_id, slot or Slot(), ack.status,
                                             ack.event_ms))
        if slot is None or len(parts) != 3 or parts[2] != str(slot.revision) or slot.state != "PENDING":
            return out
        if ack.status == "ACCEPTED":
            slot.state, slot.accepted_ms, slot.following = "ACCEPTED", now_ms, True
        elif ack.status in ("REJECTED", "EXPIRED"):
            slot.state = ack.status
        return out

    def on_sent(self, sent: Sent, now_ms: int) -> Output:
        """Journal a command of this dispatch read back from ``commands.site``; catch up with what it says.

        A resumed flow has forgotten what it sent after its last snapshot, and reads those commands back
        (its input resumes from the snapshot's offsets). A newer revision than the slot's is adopted: the
        device has it and will answer it. A later attempt of the slot's command moves the slot's attempt
        on, so no attempt number is used twice. The slot's revision carrying another command means the
        resumed flow gave that id to a new setpoint: the slot's setpoint goes out again under the next
        revision, so the device's newest command is the flow's and one id never names two commands.
        """
        out = Output()
        out.command_log.append(sent.journal_row())
        slot = self.slots.get(sent.site_id)
        if slot is None and self.state == "ACTIVE" and sent.site_id in self.claimed:
            slot = self.slots[sent.site_id] = Slot()
        if slot is None:
            return out
        if sent.revision > slot.revision:
            slot.revision, slot.setpoint_kw, slot.state = sent.revision, sent.setpoint_kw, "PENDING"
            slot.valid_from_ms, slot.valid_until_ms = sent.valid_from_ms, sent.valid_until_ms
            slot.attempt, slot.next_retry_ms = sent.attempt, sent.issued_ms + self._backoff_ms(sent.attempt)
        elif sent.revision == slot.revision and (sent.valid_from_ms, sent.setpoint_kw) != (
                slot.valid_from_ms, slot.setpoint_kw):
            if slot.state in ("PENDING", "ACCEPTED") and now_ms < slot.valid_until_ms:
                self._command(sent.site_id, slot, slot.setpoint_kw, now_ms, slot.valid_until_ms, out)
        elif sent.revision == slot.revision and sent.attempt > slot.attempt:
            slot.attempt = sent.attempt
            slot.next_retry_ms = max(slot.next_retry_ms, sent.issued_ms + self._backoff_ms(sent.attempt))
        return out

    def tick(self, now_ms: int, twin: TwinSnapshot | None) -> Output:
        """Retries, expiry, the end of the window, correction and status, as ``now_ms`` calls for them."""
        out = Output()
        if twin is not None:
            self._advance(now_ms, twin)
        now_ms = max(now_ms, self.clock_ms)
        if self.state in ("ACTIVE", "CANCELLED"):
            self._deliver(now_ms, out)
        if self.state == "ACTIVE" and now_ms >= self.request.end_ms:
            if twin is not None:
                self.measured_kw = self.measure(twin)
            self.outcome = self._judge(now_ms)
            self.state = self.outcome.verdict
            if self.outcome.reason:
                self.reason = "; ".join(r for r in (self.outcome.reason, self.reason) if r)
            return self._status(out, now_ms)
        if self.state == "ACTIVE" and twin is not None and now_ms >= self.next_correction_ms:
            self.next_correction_ms = now_ms + self.config.correction_ms
            self.measured_kw = self.measure(twin)
            self._check_following(twin, now_ms)
            if self.request.correction:
                self._correct(twin, now_ms, out)
        if self.state == "ACTIVE" and now_ms >= self.next_status_ms:
            self._status(out, now_ms)
        return out

    def holds(self) -> set[str]:
        """The sites no other dispatch may have now: those claimed while this one is not over."""
        return self.claimed if self.state in ("PENDING", "ACTIVE") else set()

    def finished(self, now_ms: int) -> bool:
        """Whether the state can go: terminal, and nothing left to deliver."""
        if self.state not in TERMINAL:
            return False
        return all(slot.state != "PENDING" or now_ms >= slot.valid_until_ms for slot in self.slots.values())

    # ----------------------------------------------------------------- planning

    def _advance(self, now_ms: int, twin: TwinSnapshot) -> None:
        self.clock_ms = max(self.clock_ms, now_ms, twin.newest_event_ms)

    def _eligible(self, twin: TwinSnapshot, claimed_only: bool = True,
                  lapsed: frozenset[str] = frozenset()) -> np.ndarray[Any, np.dtype[np.bool_]]:
        """ONLINE, claimed, not following another dispatch's command, and not refused or ignoring ours.

        A command of a ``lapsed`` dispatch (over, though the twin may still show it) is no other's.
        """
        own = f"{self.request.dispatch_id}/"
        eligible = twin.online()
        for index, site_id in enumerate(twin.site_ids):
            other = twin.active_command[index]
            slot = self.slots.get(site_id)
            if (other and not other.startswith(own) and dispatch_of(other) not in lapsed) or (
                    slot is not None and (slot.state in ("REJECTED", "EXPIRED") or not slot.following)) or (
                    claimed_only and site_id not in self.claimed):
                eligible[index] = False
        return eligible

    def _claim(self, twin: TwinSnapshot, now_ms: int, held: Mapping[str, str] | None = None,
               lapsed: frozenset[str] = frozenset()) -> None:
        """Claim free sites, most capable first, until the claimed ones give ``claim_margin`` x the target."""
        held = held or {}
        eligible = self._eligible(twin, claimed_only=False, lapsed=lapsed)
        fleet = Fleet(twin.max_discharge_kw, twin.max_charge_kw, twin.energy_available_kwh, twin.headroom_kwh,
                      eligible, twin.solar_surplus_kw)
        limits = fleet.limits_kw(self.request.target_kw >= 0, self._horizon_h(now_ms))
        n = len(twin.site_ids)
        claimed = np.fromiter((s in self.claimed for s in twin.site_ids), dtype=bool, count=n)
        free = eligible & (limits > 0) & ~claimed
        if held:
            free &= np.fromiter((s not in held for s in twin.site_ids), dtype=bool, count=n)
        candidates = np.flatnonzero(free)
        order = candidates[np.argsort(-limits[candidates], kind="stable")]  # most capable, then member order
        margin = self.config.claim_margin
        if margin > 0:
            missing = margin * abs(self.request.target_kw) - float(limits[claimed].sum())
            enough = int(np.searchsorted(np.cumsum(limits[order]), missing)) + 1 if missing > 0 else 0
            order = order[:enough]
        self.claimed.update(twin.site_ids[i] for i in order)

    def _fleet(self, twin: TwinSnapshot, lapsed: frozenset[str] = frozenset()) -> Fleet:
        return Fleet(twin.max_discharge_kw, twin.max_charge_kw, twin.energy_available_kwh, twin.headroom_kwh,
                     self._eligible(twin, lapsed=lapsed), twin.solar_surplus_kw)

    def _horizon_h(self, now_ms: int) -> float:
        return max(self.request.end_ms - now_ms, 1_000) / MS_PER_HOUR

    def _plan(self, twin: TwinSnapshot, now_ms: int, out: Output,
              lapsed: frozenset[str] = frozenset()) -> None:
        """Allocate the whole target afresh and command every site whose share changed."""
        fleet = self._fleet(twin, lapsed)
        horizon = self._horizon_h(now_ms)
        allocation: Allocation = ALLOCATORS[self.request.allocator](fleet, self.request.target_kw, horizon)
        self.shortfall_kw = allocation.shortfall_kw
        for index, site_id in enumerate(twin.site_ids):
            share = float(allocation.setpoints_kw[index])
            slot = self.slots.get(site_id)
            if abs(share) < self.config.min_command_kw:
                if slot is not None and slot.state in ("PENDING", "ACCEPTED") and slot.setpoint_kw != 0.0:
                    self._command(site_id, slot, 0.0, now_ms, now_ms + self.config.release_ms, out)
                continue
            slot = self.slots.setdefault(site_id, Slot())
            self._command(site_id, slot, share, now_ms, self.request.end_ms, out)

    def measure(self, twin: TwinSnapshot) -> float:
        """Battery power of the dispatched sites: latest reading, or last known for sites gone quiet."""
        total = 0.0
        for site_id in self.slots:
            i = twin.index.get(site_id)
            if i is not None and twin.status[i] not in ("", "UNKNOWN"):
                total += float(twin.battery_kw[i])
        return total

    def _check_following(self, twin: TwinSnapshot, now_ms: int) -> None:
        """A site that accepted a while ago but is still far from its setpoint is not following it."""
        config = self.config
        for site_id, slot in self.slots.items():
            i = twin.index.get(site_id)
            if (slot.state != "ACCEPTED" or i is None or twin.status[i] != "ONLINE"
                    or now_ms - slot.accepted_ms < config.correction_ms):
                continue
            tolerance = max(config.follow_tolerance_kw,
                            config.follow_tolerance_fraction * abs(slot.setpoint_kw))
            slot.following = abs(float(twin.battery_kw[i]) - slot.setpoint_kw) <= tolerance

    def _correct(self, twin: TwinSnapshot, now_ms: int, out: Output) -> None:
        """Move the setpoint sum by a bounded step towards removing the error, few sites at a time."""
        target = self.request.target_kw
        sign = 1.0 if target >= 0 else -1.0
        limit_step = self.config.max_step_fraction * abs(target)
        shortage = sign * (target - self.measured_kw)  # > 0: the fleet gives too little
        want = min(max(self.config.gain * shortage, -limit_step), limit_step)
        if abs(want) < self.config.min_command_kw:
            return
        fleet = self._fleet(twin)
        limits = fleet.limits_kw(sign > 0, self._horizon_h(now_ms))
        eligible = fleet.eligible
        rooms: list[tuple[float, str, Slot, float]] = []
        for index, site_id in enumerate(twin.site_ids):
            slot = self.slots.get(site_id)
            if slot is None or slot.state != "ACCEPTED" or not eligible[index]:
                continue
            given = sign * slot.setpoint_kw
            room = float(limits[index]) - given if want > 0 else given
            if room >= self.config.min_command_kw:
                rooms.append((room, site_id, slot, given))
        rooms.sort(key=lambda r: (-r[0], r[1]))
        remaining = abs(want)
        for room, site_id, slot, given in rooms:
            if remaining < self.config.min_command_kw:
                break
            change = min(room, remaining)
            remaining -= change
            new_given = given + change if want > 0 else given - change
            self._command(site_id, slot, sign * new_given, now_ms, self.request.end_ms, out)
        if want > 0:
            self.shortfall_kw = max(0.0, abs(target) - float(limits.sum()))

    # ----------------------------------------------------------------- delivery

    def _command(self, site_id: str, slot: Slot, setpoint_kw: float, now_ms: int, until_ms: int,
                 out: Output) -> None:
        slot.setpoint_kw = setpoint_kw
        slot.revision += 1
        slot.attempt = 0
        slot.valid_from_ms, slot.valid_until_ms = now_ms, until_ms
        slot.state = "PENDING"
        self._send(site_id, slot, now_ms, out)

    def _send(self, site_id: str, slot: Slot, now_ms: int, out: Output) -> None:
        """Send the slot's command (again); it is journaled when read back (:meth:`on_sent`)."""
        slot.attempt += 1
        slot.next_retry_ms = now_ms + self._backoff_ms(slot.attempt)
        ident = command_id(self.request.dispatch_id, site_id, slot.revision)
        out.commands.append({
            "command_id": ident, "dispatch_id": self.request.dispatch_id, "site_id": site_id,
            "setpoint_kw": slot.setpoint_kw, "valid_from": slot.valid_from_ms,
            "valid_until": slot.valid_until_ms, "attempt": slot.attempt, "issued_at": now_ms})

    def _backoff_ms(self, attempt: int) -> int:
        """How long an unanswered ``attempt`` waits before the next."""
        return min(self.config.retry_base_ms << (attempt - 1), self.config.retry_max_ms)

    def _journal(self, ident: str, site_id: str, slot: Slot, status: str, at_ms: int) -> CommandLogEntry:
        """A ``command_log`` row: what became of the command ``ident`` (as ``slot`` holds it) at ``at_ms``."""
        return CommandLogEntry(ident, self.request.dispatch_id, site_id, slot.setpoint_kw,
                               _dt(slot.valid_from_ms), _dt(slot.valid_until_ms), slot.attempt, status,
                               _dt(at_ms))

    def _deliver(self, now_ms: int, out: Output) -> None:
        """Re-send what is unanswered and due; give up on what can no longer apply."""
        for site_id, slot in self.slots.items():
            if slot.state != "PENDING":
                continue
            if now_ms >= slot.valid_until_ms:
                slot.state = "EXPIRED"
                ident = command_id(self.request.dispatch_id, site_id, slot.revision)
                out.command_log.append(self._journal(ident, site_id, slot, "UNANSWERED", now_ms))
            elif now_ms >= slot.next_retry_ms:
                self._send(site_id, slot, now_ms, out)

    # ----------------------------------------------------------------- status

    def _sample(self, now_ms: int) -> None:
        """Keep what this ACTIVE status says for the outcome (one per event time, as ``dispatch_log`` keeps).

        The final status is not a sample: the last ACTIVE one's power holds to the end of the window.
        """
        sample = Sample(now_ms, self.request.target_kw, self.measured_kw)
        if self.samples and self.samples[-1].at_ms >= now_ms:
            self.samples[-1] = sample
        else:
            self.samples.append(sample)

    def _judge(self, now_ms: int, why_no_sites: str = "") -> Outcome:
        """The outcome over the window up to ``now_ms`` (its end, at the latest).

        A dispatch that fails is judged over its whole window: none of it will be delivered.
        """
        request = self.request
        stop = min(max(now_ms, request.start_ms), request.end_ms)
        samples = self.samples or [Sample(request.start_ms, request.target_kw, 0.0)]
        acknowledged = sum(1 for slot in self.slots.values() if slot.accepted_ms > 0)
        return judge(samples, request.start_ms, stop, len(self.slots), self.config.outcome_tolerance,
                     why_no_sites, acknowledged)

    def _why_no_site(self, twin: TwinSnapshot) -> str:
        """Why the planner found no member site to command."""
        members = len(self.members)
        offline = sum(1 for site_id in self.members
                      if (i := twin.index.get(site_id)) is None or twin.status[i] != "ONLINE")
        held = len(self.unavailable)
        parts = [f"{offline} of {members} member sites not ONLINE" if offline else "",
                 f"{held} held by another dispatch" if held else ""]
        rest = [p for p in parts if p]
        if not rest:
            rest = [f"none of the {members} member sites has power or energy to give"]
        return ", ".join(rest)

    def figures(self, now_ms: int) -> dict[str, Any]:
        """The outcome's figures so far (final once the dispatch is over), for the stored status."""
        outcome = self.outcome if self.state in TERMINAL and self.outcome is not None else self._judge(now_ms)
        following = sum(1 for slot in self.slots.values() if slot.state == "ACCEPTED" and slot.following)
        return {
            "requested_kwh": outcome.requested_kwh, "delivered_kwh": outcome.delivered_kwh,
            "tracking_error_mean_kw": outcome.tracking_error_mean_kw,
            "tracking_error_p95_kw": outcome.tracking_error_p95_kw,
            "sites_acknowledged": sum(1 for slot in self.slots.values() if slot.accepted_ms > 0),
            "sites_following": following,
        }

    def counts(self) -> tuple[int, int, int, int]:
        """(sites commanded, accepted, pending, rejected or expired)."""
        states = [slot.state for slot in self.slots.values()]
        return (len(states), states.count("ACCEPTED"), states.count("PENDING"),
                states.count("REJECTED") + states.count("EXPIRED"))

    def status_record(self, now_ms: int) -> dict[str, Any]:
        """A DispatchStatus record (times as epoch ms) of where the dispatch stands."""
        total, acked, pending, rejected = self.counts()
        target = 0.0 if self.state in ("CANCELLED", "FAILED") else self.request.target_kw
        return {
            "dispatch_id": self.request.dispatch_id, "node_id": self.request.node_id, "state": self.state,
            "target_kw": target, "measured_kw": self.measured_kw, "error_kw": target - self.measured_kw,
            "shortfall_kw": self.shortfall_kw, "sites_total": total, "sites_acked": acked,
            "sites_pending": pending, "sites_rejected": rejected, "sites_unavailable": len(self.unavailable),
            "event_time": now_ms}

    def _status(self, out: Output, now_ms: int) -> Output:
        self.next_status_ms = now_ms + self.config.correction_ms
        if self.state == "ACTIVE":
            self._sample(now_ms)
        out.statuses.append(self.status_record(now_ms))
        return out


def _names(names_: Iterable[str], most: int = 3) -> str:
    """A few of ``names_`` (sites, dispatches) for a reason text."""
    names = sorted(set(names_))
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")


#: Journal times, cached: the 10,000 commands of one plan share their two window times.
_dt = lru_cache(maxsize=4096)(from_epoch_ms)
