"""The Bytewax face of :class:`operators.arbitration.Arbiter`, and the control dataflow's reads of the twin.

Requests and acks all go to one key (:data:`~operators.arbitration.ARBITER_KEY`):
one :class:`~operators.arbitration.Arbiter` holds every dispatch, so it alone
decides which dispatch may command which site (an ack finds its dispatch
through the command id, ``{dispatch}/{site}/{revision}``). Bytewax snapshots
it as plain versioned data (:class:`~operators.control_state.ArbiterState`) and
the step rebuilds it with its own config: an active dispatch survives a restart
of the flow and carries on delivering and correcting.

An ack counts only if it answers a command the flow sent to that very site and
its event time is plausible (``VPP_PLAUSIBLE_*``); a CREATE for a dispatch id
already used is refused. Either goes to ``telemetry.dlq`` with the reason and
is counted (:attr:`~operators.arbitration.Arbiter.refused`, and per dispatch
``acks_refused`` in its Redis status).

The clock of a dispatch is the newest of the wall clock and the fleet's time
(twin ``last_seen``, the node aggregate's event time), never an ack's: in
production the two agree; with a simulated fleet running faster than real
time, the fleet's own time rules. The step reads nothing itself: it says what
each dispatch needs (a :class:`~operators.twin_feed.Want` in the
:class:`~operators.twin_feed.TwinDemand` it is built with) and the flow's input
brings the answers as :class:`~operators.twin_feed.TwinRead` items
(:mod:`operators.twin_feed`). A dispatch whose window starts waits for the read
of its members; a correction plans only from a twin read since the last one.
The reads are not in the snapshot: a resumed step waits for the next read.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import bytewax.operators as op
from bytewax.connectors.kafka import KafkaSinkMessage
from bytewax.dataflow import Stream
from bytewax.operators import KeyedStream, StatefulBatchLogic
from typing_extensions import override

from core.config import Settings
from core.dispatch_spec import DispatchRejectedError, DispatchSpec, parse_strategy
from core.plausibility import Rules
from core.rows import CommandLogEntry, DispatchLogEntry
from core.topics import COMMANDS_ACKS, COMMANDS_SITE, DISPATCH_REQUESTS, DISPATCH_STATUS
from operators.arbitration import ARBITER_KEY, Arbiter, Refusal
from operators.control_state import ArbiterState, arbiter_state, migrate, restore
from operators.dispatch import (
    UNKNOWN_COMMAND,
    Ack,
    ControlConfig,
    Dispatch,
    Output,
    Request,
    Sent,
    TwinSnapshot,
    dispatch_of,
)
from operators.flow_metrics import RECORDS_IN
from operators.kafka_batches import Polled
from operators.records import DLQ_KEY, KafkaOut, Origin, codec, dead_letter, dead_letter_of, decoded
from operators.sinks import StatusWrite
from operators.streams import values_of
from operators.twin_feed import TwinDemand, TwinRead, Want
from schemas.times import epoch_ms, from_epoch_ms, wall_ms

CONSUMER = "dataflows.control"
log = logging.getLogger(__name__)
Event = Request | Ack | Sent
#: The record each input topic carries, and the field its Kafka key must equal.
_INPUTS = {DISPATCH_REQUESTS: ("DispatchRequest", "dispatch_id"), COMMANDS_ACKS: ("CommandAck", "site_id"),
           COMMANDS_SITE: ("SiteCommand", "site_id")}
#: What the dispatches step emits: commands, statuses and refused records for Kafka, the status for
#: Redis, journal rows for ClickHouse.
ControlResult = KafkaOut | StatusWrite | DispatchLogEntry | CommandLogEntry


@dataclass(frozen=True)
class Received:
    """A decoded request or ack and the message it came in."""

    event: Event
    origin: Origin


def decode_control(polls: list[Polled]) -> list[tuple[str, Received | KafkaOut]]:
    """Requests, acks and the flow's own commands read back, all under the arbiter's key; what cannot be
    read goes to the dead letters.

    An ack must come under its site's key (the gateway keys acks by the authenticated site), a command
    under the key of the site it commands.
    """
    out: list[tuple[str, Received | KafkaOut]] = []

    def reject(_: str, letter: KafkaOut) -> None:
        out.append((DLQ_KEY, letter))

    for poll in polls:
        RECORDS_IN.labels("control", poll.topic).inc(len(poll.messages))
        schema, owner_field = _INPUTS[poll.topic]
        for msg, record in decoded(poll, schema, CONSUMER, reject):
            key = msg.key()
            owner = record[owner_field]
            keyless = key is None and poll.topic != DISPATCH_REQUESTS  # only a request may come without one
            if keyless or (key is not None and key != owner.encode()):
                reason = f"record of {owner!r} under key {key!r}"
                out.append((DLQ_KEY, dead_letter(msg, "KEY_MISMATCH", reason, CONSUMER)))
                continue
            event = _EVENTS[poll.topic](record)
            if isinstance(event, Sent) and not _names_itself(event):
                reason = (f"{event.command_id!r} is not a command id of {event.dispatch_id!r} "
                          f"for {event.site_id!r}")
                out.append((DLQ_KEY, dead_letter(msg, UNKNOWN_COMMAND, reason, CONSUMER)))
                continue
            out.append((ARBITER_KEY, Received(event, Origin.of(msg))))
    return out


def _names_itself(sent: Sent) -> bool:
    """Whether the command's id is ``{dispatch}/{site}/{revision}`` of its own dispatch and site."""
    parts = sent.command_id.split("/")
    return len(parts) == 3 and parts[:2] == [sent.dispatch_id, sent.site_id] and parts[2].isdigit()


def _sent(record: dict[str, Any]) -> Sent:
    return Sent(record["command_id"], record["dispatch_id"], record["site_id"], float(record["setpoint_kw"]),
                epoch_ms(record["valid_from"]), epoch_ms(record["valid_until"]), record["attempt"],
                epoch_ms(record["issued_at"]))


def _ack(record: dict[str, Any]) -> Ack:
    return Ack(record["command_id"], record["site_id"], record["status"], record["reason"],
               epoch_ms(record["event_time"]))


def _request(record: dict[str, Any]) -> Request:
    strategy = record["strategy"]
    allocator, correction = (parse_strategy(strategy) if record["action"] in ("CREATE", "REPLACE")
                             else ("waterfill", False))
    sites = record["site_ids"]
    return Request(record["dispatch_id"], record["action"], record["node_id"],
                   tuple(sites) if sites is not None else None, float(record["target_kw"]),
                   epoch_ms(record["start"]), epoch_ms(record["end"]), allocator, correction, strategy,
                   record["requested_by"], epoch_ms(record["requested_at"]), record["priority"])


_EVENTS: dict[str, Callable[[dict[str, Any]], Event]] = {
    DISPATCH_REQUESTS: _request, COMMANDS_ACKS: _ack, COMMANDS_SITE: _sent}


def _problem(request: Request, now_ms: int) -> str | None:
    """Why a request cannot run (the same checks the CLI and API make before sending), or None."""
    try:
        DispatchSpec(request.target_kw, from_epoch_ms(request.start_ms), from_epoch_ms(request.end_ms),
                     request.node_id, request.site_ids, request.strategy,
                     request.dispatch_id, request.priority).check(from_epoch_ms(now_ms))
    except DispatchRejectedError as exc:
        return str(exc)
    return None


def control_config(settings: Settings) -> ControlConfig:
    return ControlConfig(
        retry_base_ms=int(settings.control_retry_base_s * 1000),
        retry_max_ms=int(settings.control_retry_max_s * 1000),
        correction_ms=int(settings.control_correction_s * 1000),
        gain=settings.control_gain, max_step_fraction=settings.control_max_step_fraction,
        claim_margin=settings.control_claim_margin, outcome_tolerance=settings.control_outcome_tolerance,
    )


def emissions(dispatch: Dispatch, out: Output) -> list[ControlResult]:
    """Commands and statuses for Kafka, the status for Redis, journal rows for ClickHouse."""
    encode = codec().encode
    request = dispatch.request
    ident = request.dispatch_id
    emitted: list[ControlResult] = [KafkaSinkMessage(
        key=c["site_id"].encode(), value=encode("SiteCommand", c), topic=COMMANDS_SITE) for c in out.commands]
    for status in out.statuses:
        emitted.append(KafkaSinkMessage(
            key=ident.encode(), value=encode("DispatchStatus", status), topic=DISPATCH_STATUS))
        fields = {**status, "node_id": status["node_id"] or "", "start": request.start_ms,
                  "end": request.end_ms, "strategy": request.strategy, "requested_by": request.requested_by,
                  "reason": dispatch.reason, "priority": request.priority,
                  "acks_refused": dispatch.acks_refused, **dispatch.figures(status["event_time"]),
                  "site_ids": ",".join(request.site_ids) if request.site_ids is not None else ""}
        emitted.append(StatusWrite(status["dispatch_id"], status["event_time"], status["state"],
                                   request.start_ms, fields))
        emitted.append(DispatchLogEntry(
            status["dispatch_id"], from_epoch_ms(status["event_time"]), status["state"], status["node_id"],
            status["target_kw"], status["measured_kw"], status["error_kw"], status["shortfall_kw"],
            status["sites_total"], status["sites_acked"], status["sites_pending"], status["sites_rejected"]))
    emitted.extend(out.command_log)
    return emitted


class ControlLogic(StatefulBatchLogic[Received | TwinRead, ControlResult, bytes]):
    """Every dispatch of the control dataflow, under one key: the one place that arbitrates sites."""

    def __init__(self, arbiter: Arbiter, rules: Rules, tick: timedelta, demand: TwinDemand) -> None:
        self.arbiter = arbiter
        self.rules = rules
        self.tick = tick
        self.demand = demand
        #: The newest twin read per dispatch, and the dispatches whose newest twin is not planned from yet.
        self.reads: dict[str, TwinRead] = {}
        self.fresh: set[str] = set()

    @classmethod
    def builder(cls, settings: Settings, demand: TwinDemand | None = None) -> Any:
        """Build the logic of the arbiter key; it tells ``demand`` what the flow's input should read."""
        config = control_config(settings)
        rules = settings.plausibility()
        tick = timedelta(seconds=settings.control_tick_s)
        shared = demand or TwinDemand()

        def build(resume: bytes | None) -> ControlLogic:
            return cls(_restored(resume, config), rules, tick, shared)

        return build

    def _now(self, dispatch: Dispatch) -> int:
        return self.arbiter.clock(dispatch, wall_ms())

    @override
    def on_batch(self, values: list[Received | TwinRead]) -> tuple[list[ControlResult], bool]:
        emitted: list[ControlResult] = []
        for value in values:
            if isinstance(value, TwinRead):
                self._join(value)
            else:
                emitted += self._apply(value)
        emitted += self._step()
        return emitted, self.RETAIN

    def _join(self, read: TwinRead) -> None:
        """Keep the newest read of a dispatch still held (a read may come after its dispatch is gone)."""
        if read.dispatch_id in self.arbiter.dispatches:
            self.reads[read.dispatch_id] = read
            if read.twin is not None:
                self.fresh.add(read.dispatch_id)

    def _twin(self, dispatch: Dispatch, fresh_only: bool) -> TwinSnapshot | None:
        """The newest twin read of the dispatch's members (``fresh_only``: if not planned from yet)."""
        ident = dispatch.request.dispatch_id
        read = self.reads.get(ident)
        if read is None or read.twin is None or read.twin.site_ids != dispatch.members:
            return None
        if fresh_only and ident not in self.fresh:
            return None
        self.fresh.discard(ident)
        return read.twin

    def _follow(self, dispatch: Dispatch) -> None:
        """Ask for the twin of the members while the dispatch has sites to watch, else for nothing."""
        request = dispatch.request
        watching = dispatch.state in ("ACTIVE", "CANCELLED") and dispatch.members
        want = Want("twin", request, tuple(dispatch.members)) if watching else None
        self.demand.want(request.dispatch_id, want)

    def _refused(self, received: Received, refusal: Refusal) -> list[ControlResult]:
        log.warning("refused %s: %s", refusal.kind, refusal.detail)
        return [dead_letter_of(received.origin, refusal.kind, refusal.detail, CONSUMER)]

    def _apply(self, received: Received) -> list[ControlResult]:
        event, arbiter = received.event, self.arbiter
        if isinstance(event, Sent):
            sender = arbiter.dispatches.get(event.dispatch_id)
            if sender is None:  # retired, or never ours: journaled all the same, as the topic holds it
                return [event.journal_row()]
            return emissions(sender, sender.on_sent(event, self._now(sender)))
        if isinstance(event, Ack):
            refusal = arbiter.check_ack(event, self.rules, wall_ms())
            if refusal is not None:
                return self._refused(received, refusal)
            dispatch = arbiter.dispatches[dispatch_of(event.command_id)]
            return emissions(dispatch, dispatch.on_ack(event, self._now(dispatch)))
        if event.action == "CREATE":
            created = arbiter.create(event)
            if isinstance(created, Refusal):
                return self._refused(received, created)
            if created is None:  # the same request again (a replay): the dispatch exists already
                return []
            now = self._now(created)
            problem = _problem(event, now)
            return emissions(created, created.fail(problem, now) if problem else created.tick(now, None))
        running = arbiter.dispatches.get(event.dispatch_id)
        if running is None:
            return []
        dispatch, now = running, self._now(running)
        if event.action == "CANCEL":
            return emissions(dispatch, dispatch.cancel(now))
        if event.action == "REPLACE" and _problem(event, now) is None:
            twin = self._twin(dispatch, fresh_only=False) if dispatch.state == "ACTIVE" else None
            out = dispatch.replace(event, twin, now, arbiter.held(dispatch, now), arbiter.lapsed(now))
            self._follow(dispatch)
            return emissions(dispatch, out)
        return []

    def _step(self) -> list[ControlResult]:
        emitted: list[ControlResult] = []
        for dispatch in self.arbiter.in_order():  # claims are made in the arbitration order
            emitted += self._step_one(dispatch)
        self.arbiter.retire(wall_ms())
        held = set(self.arbiter.dispatches)
        self.demand.keep_only(held)
        for gone in set(self.reads) - held:
            del self.reads[gone]
        self.fresh &= held
        return emitted

    def _step_one(self, dispatch: Dispatch) -> list[ControlResult]:
        ident, request = dispatch.request.dispatch_id, dispatch.request
        if dispatch.state == "FAILED":
            self.demand.want(ident, None)
            return []
        now = self._now(dispatch)
        if dispatch.state == "PENDING":  # no members yet to tell the time by: the node's, as last read
            read = self.reads.get(ident)
            if read is not None:
                dispatch.clock_ms = max(dispatch.clock_ms, read.fleet_ms)
                now = self._now(dispatch)
            if dispatch.needs_members(now):
                if read is None or read.kind != "members" or read.members is None or read.twin is None:
                    self.demand.want(ident, Want("members", request))  # activate when the read comes
                    return []
                self.fresh.discard(ident)
                out = dispatch.activate(read.members, read.twin, now, self.arbiter.held(dispatch, now),
                                        self.arbiter.lapsed(now))
                self._follow(dispatch)
                return emissions(dispatch, out)
            self.demand.want(ident, Want("clock", request))  # the window has not started
            return emissions(dispatch, dispatch.tick(now, None))
        twin = self._twin(dispatch, fresh_only=True) if dispatch.state in ("ACTIVE", "CANCELLED") else None
        self._follow(dispatch)
        return emissions(dispatch, dispatch.tick(now, twin))

    @override
    def notify_at(self) -> datetime | None:
        return datetime.now(UTC) + self.tick if self.arbiter.dispatches else None

    @override
    def on_notify(self) -> tuple[list[ControlResult], bool]:
        return self._step(), self.RETAIN

    @override
    def snapshot(self) -> bytes:
        """The arbiter as plain versioned data (:class:`~operators.control_state.ArbiterState`)."""
        return pickle.dumps(arbiter_state(self.arbiter), protocol=pickle.HIGHEST_PROTOCOL)


def _restored(resume: bytes | None, config: ControlConfig) -> Arbiter:
    """The arbiter a snapshot of any version describes, run by ``config``."""
    state = pickle.loads(resume) if resume is not None else None
    if isinstance(state, Arbiter):  # version 1
        state = migrate(state)
    if isinstance(state, ArbiterState):
        return restore(state, config)
    if state is not None:  # version 0: a Dispatch per id, from before the arbiter
        log.warning("dropped a dispatch restored from before arbitration: its commands lapse at the "
                    "end of their validity")
    return Arbiter(config)


# ---- the steps, as the control dataflow wires them --------------------------------------------


@dataclass(frozen=True)
class ControlInput:
    """Requests, acks and twin reads under the arbiter's key, and the records that could not be used."""

    events: KeyedStream[Received | TwinRead]
    dead_letters: Stream[KafkaOut]


def decode_input(items: list[Polled | TwinRead]) -> list[tuple[str, Received | TwinRead | KafkaOut]]:
    """Polls decoded (:func:`decode_control`), twin reads passed on under the arbiter's key."""
    out: list[tuple[str, Received | TwinRead | KafkaOut]] = [
        (ARBITER_KEY, item) for item in items if isinstance(item, TwinRead)]
    out += decode_control([item for item in items if isinstance(item, Polled)])
    return out


def decode(step_id: str, items: Stream[Polled | TwinRead]) -> ControlInput:
    """Decode polled requests and acks (:func:`decode_control`); pass the twin reads on."""
    decoded = op.flat_map_batch(step_id, items, decode_input)
    return ControlInput(op.filter_map(f"{step_id}-events", decoded, _event),
                        values_of(f"{step_id}-dead-letters", decoded, KafkaSinkMessage))


def _event(item: tuple[str, Received | TwinRead | KafkaOut]) -> tuple[str, Received | TwinRead] | None:
    key, value = item
    return (key, value) if isinstance(value, Received | TwinRead) else None


@dataclass(frozen=True)
class DispatchesOut:
    """What the dispatches step hands on, by destination."""

    #: Commands (commands.site), statuses (dispatch.status), refused records (telemetry.dlq).
    kafka: Stream[KafkaOut]
    #: Redis ``dispatch:{id}`` writes.
    statuses: Stream[StatusWrite]
    #: dispatch_log and command_log rows for ClickHouse, keyed by dispatch.
    journal: KeyedStream[DispatchLogEntry | CommandLogEntry]


def dispatches(step_id: str, events: KeyedStream[Received | TwinRead], settings: Settings,
               demand: TwinDemand) -> DispatchesOut:
    """The arbiter and every dispatch it holds; it tells ``demand`` what the input should read."""
    results = op.stateful_batch(step_id, events, ControlLogic.builder(settings, demand))
    rows: Stream[DispatchLogEntry | CommandLogEntry] = op.merge(
        f"{step_id}-rows", values_of(f"{step_id}-status-rows", results, DispatchLogEntry),
        values_of(f"{step_id}-command-rows", results, CommandLogEntry))
    return DispatchesOut(
        kafka=values_of(f"{step_id}-kafka", results, KafkaSinkMessage),
        statuses=values_of(f"{step_id}-statuses", results, StatusWrite),
        journal=op.key_on(f"{step_id}-journal", rows, lambda row: row.dispatch_id),
    )
