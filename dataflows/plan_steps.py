"""The Bytewax face of :class:`siteplan.desk.PlanDesk`: the steps the plans dataflow wires.

:func:`decode` turns polls of ``plans.site``, ``assets.changes`` and
``twin.status`` into items under the desk's one key (the aggregate needs every
site's plan in one place, like the control flow's arbiter) and dead-letters what
it cannot use: undecodable records, a record under another site's key, a plan
whose ``issued_at`` is implausible (``core.plausibility.check_event_time``, the
rules every boundary uses). :func:`plans` holds the desk: it checks each plan
against the site's registered limits and reserve (``siteplan.aggregate.check_plan``;
a refused plan goes to ``telemetry.dlq`` with the reason and is counted), keeps
the latest per site, and re-aggregates after a change once the input pauses for
``plans_settle_s`` (a burst has ended), at the latest ``plans_emit_interval_s``
after the last aggregation while input keeps coming (and whenever the grid moves
to the next interval), by differences: only the sites that changed
(``siteplan.sums``). The changed nodes' plans go to
Redis and, as NodePlan records, to ``plans.node``.

This module lives in ``dataflows/`` rather than ``operators/`` because it joins
both sibling packages of the logic layer: ``operators`` (ancestry, Kafka input,
sinks) and ``siteplan`` (the desk), which may not import each other.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import bytewax.operators as op
from bytewax.connectors.kafka import KafkaSinkMessage
from bytewax.dataflow import Stream
from bytewax.operators import KeyedStream, StatefulBatchLogic
from prometheus_client import Counter
from typing_extensions import override

from core import keys
from core.config import Settings
from core.plausibility import Rules, check_event_time
from core.rows import NodePlanRow, SitePlanRow
from core.topics import ASSETS_CHANGES, PLANS_NODE, PLANS_SITE, TWIN_STATUS
from operators.ancestry import Ancestry, AncestryVersion, Path
from operators.kafka_batches import Polled
from operators.records import DLQ_KEY, KafkaOut, Origin, codec, dead_letter, dead_letter_of, decoded
from operators.sinks import TwinWrite
from operators.streams import values_of
from schemas.times import epoch_ms, from_epoch_ms, wall_ms
from siteplan.aggregate import SiteLimits
from siteplan.desk import DeskConfig, DeskState, NodeAnswer, PlanDesk, Taken, rejection_kind

CONSUMER = "dataflows.plans"
#: The one key of the plans step.
DESK_KEY = "plans"
#: Version of the step's snapshot (:class:`PlansStepState`).
STEP_STATE_VERSION = 1

REJECTED = Counter("vpp_plans_rejected_total", "SitePlan records dead-lettered, by reason", ["reason"])

_SCHEMAS = {PLANS_SITE: "SitePlan", ASSETS_CHANGES: "SiteAncestry", TWIN_STATUS: "SiteStatus"}


@dataclass(frozen=True)
class PlanIn:
    """A decoded SitePlan and the message it came in (to dead-letter it if the desk refuses it)."""

    record: dict[str, Any]
    origin: Origin


@dataclass(frozen=True)
class SiteIn:
    """A decoded SiteAncestry: the site's limits and effective-dated ancestors."""

    record: dict[str, Any]


@dataclass(frozen=True)
class StatusIn:
    """A twin status transition of a site."""

    site_id: str
    status: str
    event_ms: int


PlanItem = PlanIn | SiteIn | StatusIn
#: The same as a tuple: isinstance with a tuple is several times faster than with a union.
_ITEM_TYPES = (PlanIn, SiteIn, StatusIn)
#: What the plans step emits: dead letters, Redis writes (site and node plans), history rows.
PlanResult = KafkaOut | TwinWrite | SitePlanRow | NodePlanRow


def decode_plans(polls: list[Polled], rules: Rules) -> list[tuple[str, PlanItem | KafkaOut]]:
    """Plans, ancestries and statuses under the desk's key; what cannot be used, dead-lettered."""
    out: list[tuple[str, PlanItem | KafkaOut]] = []
    now_ms = wall_ms()

    def reject(kind: str, letter: KafkaOut) -> None:
        REJECTED.labels(kind).inc()
        out.append((DLQ_KEY, letter))

    for poll in polls:
        expected = _SCHEMAS[poll.topic]
        for msg, record in decoded(poll, expected, CONSUMER, reject):
            site_id = record["site_id"]
            key = msg.key()
            if key is not None and key != site_id.encode():
                REJECTED.labels("KEY_MISMATCH").inc()
                out.append((DLQ_KEY, dead_letter(
                    msg, "KEY_MISMATCH", f"record for site {site_id!r} under key {key!r}", CONSUMER)))
                continue
            if expected == "SitePlan":
                verdict = check_event_time(epoch_ms(record["issued_at"]), now_ms, rules)
                if verdict is not None:
                    REJECTED.labels(verdict.reason).inc()
                    out.append((DLQ_KEY, dead_letter(msg, verdict.reason, f"plan issued_at: {verdict.detail}",
                                                     CONSUMER)))
                    continue
                out.append((DESK_KEY, PlanIn(record, Origin.of(msg))))
            elif expected == "SiteAncestry":
                out.append((DESK_KEY, SiteIn(record)))
            else:
                status = str(record["status"])
                out.append((DESK_KEY, StatusIn(site_id, status, epoch_ms(record["event_time"]))))
    return out


def node_message(answer: NodeAnswer) -> KafkaOut:
    """A node's changed aggregate plan for ``plans.node`` (NodePlan, keyed by the node)."""
    value = codec().encode("NodePlan", answer.record())
    return KafkaSinkMessage(key=answer.node_id.encode(), value=value, topic=PLANS_NODE)


def desk_config(settings: Settings) -> DeskConfig:
    return DeskConfig(steps=settings.plans_horizon_steps, interval_minutes=settings.plans_interval_minutes,
                      stale_after_ms=round(settings.plans_stale_after_s * 1000),
                      history_interval_ms=round(settings.plans_history_interval_s * 1000))


#: An Ancestry as plain tuples: (version, capacity, max charge, max discharge, reserve, region, versions).
PackedAncestry = tuple[int, float, float, float, float, str, tuple[Any, ...]]


def pack_ancestry(ancestry: Ancestry) -> PackedAncestry:
    """An Ancestry as plain tuples, for the snapshot."""
    versions = tuple((v.version, v.effective_from_ms, v.retired, tuple(tuple(p) for p in v.paths))
                     for v in ancestry.versions)
    return (ancestry.version, ancestry.capacity_kwh, ancestry.max_charge_kw, ancestry.max_discharge_kw,
            ancestry.reserve_pct, ancestry.region, versions)


def unpack_ancestry(packed: PackedAncestry) -> Ancestry:
    version, capacity, charge, discharge, reserve, region, versions = packed
    return Ancestry(version, capacity, charge, discharge, reserve, region,
                    tuple(AncestryVersion(n, effective, retired, tuple(Path(*p) for p in paths))
                          for n, effective, retired, paths in versions))


@dataclass(frozen=True)
class PlansStepState:
    """The step's snapshot: plain, versioned data without config (the desk's and the ancestries)."""

    version: int
    #: site -> its ancestry as plain tuples (:func:`pack_ancestry`: named tuples pickle slowly).
    ancestries: dict[str, PackedAncestry]
    desk: DeskState


@dataclass
class _Sites:
    """Each site's ancestry, and when the next effective-dated change of membership falls."""

    ancestries: dict[str, Ancestry] = field(default_factory=dict)
    #: Each ancestry packed for the snapshot, kept as they change (not at every snapshot).
    packed: dict[str, PackedAncestry] = field(default_factory=dict)
    next_change_ms: int | None = None


def limits_of(ancestry: Ancestry) -> SiteLimits | None:
    """A site's registered limits, or None once it is retired."""
    if ancestry.versions and ancestry.versions[-1].retired:
        return None
    return SiteLimits(ancestry.capacity_kwh, ancestry.max_charge_kw, ancestry.max_discharge_kw,
                      ancestry.reserve_pct)


def ancestors_of(ancestry: Ancestry, t_ms: int) -> tuple[tuple[str, str], ...]:
    """(hierarchy, node) of every ancestor of the site at ``t_ms``."""
    return tuple((path.hierarchy, node) for path in ancestry.paths_at(t_ms) for node in path.node_ids)


class PlansLogic(StatefulBatchLogic[PlanItem, PlanResult, bytes]):
    """The plan desk inside the dataflow: plans in, aggregate plans out after a pause in the input or at
    most an interval after the last (:meth:`PlanDesk.next_due_ms`)."""

    def __init__(self, desk: PlanDesk, ancestries: dict[str, Ancestry], emit_interval_ms: int,
                 max_ahead_ms: int, settle_ms: int | None = None) -> None:
        self.desk = desk
        self.sites = _Sites(ancestries, {site: pack_ancestry(a) for site, a in ancestries.items()})
        self.emit_interval_ms = emit_interval_ms
        self.settle_ms = settle_ms
        self.max_ahead_ms = max_ahead_ms
        self.last_emit_ms = wall_ms() - emit_interval_ms
        #: When the step last finished taking a batch (None: not since it started).
        self.last_input_ms: int | None = None
        now = wall_ms()
        for site_id in ancestries:  # restored: nothing waits for a site that was registered already
            self._place(site_id, now)

    @classmethod
    def builder(cls, settings: Settings) -> Any:
        config = desk_config(settings)
        interval_ms = round(settings.plans_emit_interval_s * 1000)
        settle_ms = round(settings.plans_settle_s * 1000)
        max_ahead_ms = settings.plausibility().max_ahead_ms

        def build(resume: bytes | None) -> PlansLogic:
            if resume is None:
                return cls(PlanDesk(config), {}, interval_ms, max_ahead_ms, settle_ms)
            state = pickle.loads(resume)
            if state.version > STEP_STATE_VERSION:
                raise ValueError(f"plans step state version {state.version} is newer than this code "
                                 f"({STEP_STATE_VERSION})")
            ancestries = {site: unpack_ancestry(packed) for site, packed in state.ancestries.items()}
            return cls(PlanDesk(config, state.desk), ancestries, interval_ms, max_ahead_ms, settle_ms)

        return build

    def _place(self, site_id: str, now_ms: int) -> list[PlanResult]:
        """Tell the desk a site's limits and its ancestors now; note when they may change next.

        What became of the site's plans that waited for its registration.
        """
        ancestry = self.sites.ancestries[site_id]
        taken = self.desk.on_site(site_id, limits_of(ancestry), ancestors_of(ancestry, now_ms))
        later = ancestry.next_change_after(now_ms)
        if later is not None and (self.sites.next_change_ms is None or later < self.sites.next_change_ms):
            self.sites.next_change_ms = later
        return [result for item in taken for result in self._results(item, now_ms)]

    def _refresh(self, now_ms: int) -> None:
        """Re-place every site once an effective-dated change of membership has come due."""
        due = self.sites.next_change_ms
        if due is None or now_ms < due:
            return
        self.sites.next_change_ms = None
        for site_id in self.sites.ancestries:
            self._place(site_id, now_ms)  # registered sites: no plan waits for them

    def _take(self, item: SiteIn | StatusIn, now_ms: int) -> list[PlanResult]:
        """A registration (which may release plans that waited for it) or a status."""
        if isinstance(item, SiteIn):
            site_id = item.record["site_id"]
            held = self.sites.ancestries.get(site_id)
            if held is None:
                held = self.sites.ancestries[site_id] = Ancestry.from_record(item.record)
            elif not held.merge(item.record):
                return []
            self.sites.packed[site_id] = pack_ancestry(held)
            return self._place(site_id, now_ms)
        self.desk.on_status(item.site_id, item.status, item.event_ms)
        return []

    def _results(self, taken: Taken, now_ms: int) -> list[PlanResult]:
        """A refused plan's dead letter; an accepted plan's history row (``site_plan`` is where a site's
        plan is read: a Redis copy of every plan cost more than the rest of the step)."""
        outcome, accepted = taken.outcome, taken.accepted
        if outcome.reason is not None:
            kind = rejection_kind(outcome.reason)
            REJECTED.labels(kind).inc()
            return [dead_letter_of(taken.tag, kind, outcome.reason, CONSUMER)]
        return [] if accepted is None else [accepted.row]

    def _emit(self, at_end: bool = False) -> list[PlanResult]:
        now = wall_ms()
        results: list[PlanResult] = [result for taken in self.desk.expire(now, everything=at_end)
                                     for result in self._results(taken, now)]
        self._refresh(now)
        self.last_emit_ms = now
        emission = self.desk.emit(now, flush_history=at_end)
        results.extend(self._node_write(answer, now) for answer in emission.nodes)
        results.extend(node_message(answer) for answer in emission.nodes)
        results.extend(emission.rows)
        return results

    def _node_write(self, answer: NodeAnswer, now_ms: int) -> TwinWrite:
        return TwinWrite(keys.node_plan(answer.node_id), (answer.computed_ms, 0), answer.fields(),
                         now_ms + self.max_ahead_ms)

    @override
    def on_batch(self, values: list[PlanItem]) -> tuple[list[PlanResult], bool]:
        """Items in order; each run of consecutive plans is checked at once (``PlanDesk.on_plans``)."""
        now = wall_ms()
        results: list[PlanResult] = []
        run: list[tuple[dict[str, Any], Any]] = []
        for item in values:
            if isinstance(item, PlanIn):
                run.append((item.record, item.origin))
                continue
            results.extend(self._plans(run, now))
            run = []
            results.extend(self._take(item, now))
        results.extend(self._plans(run, now))
        self.last_input_ms = wall_ms()
        return results, self.RETAIN

    def _plans(self, run: list[tuple[dict[str, Any], Any]], now_ms: int) -> list[PlanResult]:
        taken = self.desk.on_plans(run, now_ms) if run else []
        return [result for item in taken for result in self._results(item, now_ms)]

    @override
    def notify_at(self) -> datetime:
        return from_epoch_ms(self.desk.next_due_ms(self.last_emit_ms, self.emit_interval_ms,
                                                   self.last_input_ms, self.settle_ms))

    @override
    def on_notify(self) -> tuple[list[PlanResult], bool]:
        return self._emit(), self.RETAIN

    @override
    def on_eof(self) -> tuple[list[PlanResult], bool]:
        return self._emit(at_end=True), self.RETAIN

    @override
    def snapshot(self) -> bytes:
        state = PlansStepState(STEP_STATE_VERSION, dict(self.sites.packed), self.desk.state())
        return pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)


# ---- the steps, as the plans dataflow wires them ----------------------------------------------


@dataclass(frozen=True)
class PlansInput:
    """Plans, ancestries and statuses under the desk's key, and the records that could not be used."""

    items: KeyedStream[PlanItem]
    dead_letters: Stream[KafkaOut]


def decode(step_id: str, polls: Stream[Polled], settings: Settings) -> PlansInput:
    """Decode polled records (:func:`decode_plans`)."""
    rules = settings.plausibility()
    decoded = op.flat_map_batch(step_id, polls, lambda batch: decode_plans(batch, rules))
    return PlansInput(op.filter_map(f"{step_id}-items", decoded, _item),
                      values_of(f"{step_id}-dead-letters", decoded, KafkaSinkMessage))


def _item(item: tuple[str, PlanItem | KafkaOut]) -> tuple[str, PlanItem] | None:
    key, value = item
    return (key, value) if isinstance(value, _ITEM_TYPES) else None


@dataclass(frozen=True)
class PlansOut:
    """What the plans step hands on, by destination."""

    #: Refused plans (telemetry.dlq) and the changed nodes' aggregate plans (plans.node).
    kafka: Stream[KafkaOut]
    #: Redis ``plan:node:{id}`` writes.
    redis: Stream[TwinWrite]
    #: site_plan and node_plan rows for ClickHouse, keyed by site or node.
    history: KeyedStream[SitePlanRow | NodePlanRow]


def plans(step_id: str, items: KeyedStream[PlanItem], settings: Settings) -> PlansOut:
    """The plan desk: checks, the latest plan per site, aggregate plans of every node."""
    results = op.stateful_batch(step_id, items, PlansLogic.builder(settings))
    rows: Stream[SitePlanRow | NodePlanRow] = op.merge(
        f"{step_id}-rows", values_of(f"{step_id}-site-rows", results, SitePlanRow),
        values_of(f"{step_id}-node-rows", results, NodePlanRow))
    return PlansOut(
        kafka=values_of(f"{step_id}-kafka", results, KafkaSinkMessage),
        redis=values_of(f"{step_id}-redis", results, TwinWrite),
        history=op.key_on(f"{step_id}-history", rows,
                          lambda row: row.site_id if isinstance(row, SitePlanRow) else row.node_id),
    )
