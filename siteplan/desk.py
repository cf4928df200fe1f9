"""The live aggregate plan: what the plans dataflow's step holds and decides. Pure, no I/O.

A :class:`PlanDesk` takes the three inputs of the plans dataflow one record at a
time (a site's registered limits and ancestors, its twin status, its plans) into
a :class:`~siteplan.intake.PlanIntake`, and, when asked, aggregates the latest
plans of every current member site per node on a grid of intervals starting at
the interval that holds "now": by differences, only the sites that changed since
the last aggregation (:class:`siteplan.sums.NodeSums`; every site when the grid
moves), equal to :func:`siteplan.aggregate.aggregate` of them all. It answers
only the nodes whose aggregate changed since it last answered (a node that lost
its last member answers once more, empty), and gathers them for history, which
is written less often than the live plan.

A plan can arrive before its site's registration (the flow reads ``plans.site``
and ``assets.changes`` side by side, so after a restart or on replay either may
come first): a plan for a site the desk does not know yet waits, up to
``unknown_grace_ms``, for the site to appear, and only then is refused as a plan
for an unknown site.

A site counts as online unless its newest twin status says OFFLINE: a site that
sends plans but whose status the flow has not heard yet (the telemetry flow
announces transitions only) is taken at its word. Statuses are ordered by their
event time, so a replayed older status never overrides a newer one.

Nothing here is configured from settings or clocks: the step passes the
:class:`DeskConfig` and the time in; :meth:`PlanDesk.state` is the plain,
versioned data the dataflow snapshots (limits and ancestors are not in it: the
step restores them from its own copy of the sites' ancestries).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from core.rows import NodePlanRow, SitePlanRow
from schemas.times import from_epoch_ms
from siteplan.aggregate import MINUTE_MS, NodePlan, Plan, SiteLimits
from siteplan.intake import Outcome, PlanIntake
from siteplan.sums import Member, NodeSums, PackedPlan, pack, unpack

#: Version of :class:`DeskState`; a snapshot of a newer version fails loudly.
STATE_VERSION = 1
OFFLINE = "OFFLINE"

#: Error kinds of the dead letters of rejected plans, by a phrase of check_plan's reason.
_REJECTION_KINDS = (
    ("unknown site", "UNKNOWN_SITE"),
    ("no intervals", "NO_INTERVALS"),
    ("non-finite", "not_a_number"),
    ("beyond the site's limits", "BEYOND_LIMITS"),
    ("reserve", "BELOW_RESERVE"),
)


def rejection_kind(reason: str) -> str:
    """The dead letter's ``error_kind`` for a reason :func:`siteplan.aggregate.check_plan` gave."""
    for phrase, kind in _REJECTION_KINDS:
        if phrase in reason:
            return kind
    return "PLAN_REJECTED"


@dataclass(frozen=True)
class DeskConfig:
    """The grid of the aggregate plan and how often history is written, in milliseconds."""

    steps: int = 96
    interval_minutes: int = 15
    stale_after_ms: int = 3_600_000
    history_interval_ms: int = 60_000
    #: How long a plan for a site not (yet) registered waits for its registration before it is refused.
    unknown_grace_ms: int = 60_000

    @property
    def interval_ms(self) -> int:
        return self.interval_minutes * MINUTE_MS

    def grid_start(self, now_ms: int) -> int:
        """Start of the interval that holds ``now_ms``: the first interval of the aggregate plan."""
        return now_ms - now_ms % self.interval_ms


@dataclass(frozen=True)
class DeskState:
    """What a desk must keep across a restart: the latest plans, statuses and outcome counts."""

    version: int
    #: site -> its latest plan, packed (:func:`pack`): a day of floats as bytes pickles ~50x faster.
    plans: dict[str, PackedPlan]
    #: site -> (event time of its newest status, that status).
    statuses: dict[str, tuple[int, str]]
    counts: dict[str, int]
    #: Plans of sites not registered yet: site -> [(record, tag, received ms)].
    waiting: dict[str, list[tuple[dict[str, Any], Any, int]]] = field(default_factory=dict)


@dataclass(frozen=True)
class Accepted:
    """A plan that entered the book (new or replacing an older one): its history row and the plan."""

    plan: Plan
    row: SitePlanRow


@dataclass(frozen=True)
class NodeAnswer:
    """One node's aggregate plan, computed at ``computed_ms``, in the hierarchy it belongs to."""

    node_id: str
    hierarchy: str
    plan: NodePlan
    computed_ms: int

    def fields(self) -> dict[str, Any]:
        """The node's live plan as Redis hash fields (arrays as JSON lists, times in epoch ms)."""
        p = self.plan
        return {
            "node_id": self.node_id, "hierarchy": self.hierarchy, "start_ms": p.start_ms,
            "interval_minutes": p.interval_minutes, "steps": len(p.planned_kw),
            "planned_kw": _json(p.planned_kw.tolist()), "estimate_kw": _json(p.estimate_kw.tolist()),
            "planned_sites": _json(p.planned_sites.tolist()),
            "carried_sites": _json(p.carried_sites.tolist()),
            "coverage": _json(p.coverage.tolist()), "expected_sites": p.expected_sites,
            "stale_sites": p.stale_sites, "computed_at": self.computed_ms,
        }

    def record(self) -> dict[str, Any]:
        """The node's plan as a NodePlan record for ``plans.node`` (times as UTC datetimes)."""
        p = self.plan
        return {
            "node_id": self.node_id, "hierarchy": self.hierarchy,
            "event_time": from_epoch_ms(self.computed_ms), "start": from_epoch_ms(p.start_ms),
            "interval_minutes": p.interval_minutes,
            "expected_sites": p.expected_sites, "stale_sites": p.stale_sites,
            "planned_kw": p.planned_kw.tolist(), "estimate_kw": p.estimate_kw.tolist(),
            "planned_sites": p.planned_sites.tolist(), "carried_sites": p.carried_sites.tolist(),
            "coverage": p.coverage.tolist(),
        }

    def rows(self) -> list[NodePlanRow]:
        """One ``node_plan`` row per interval."""
        p = self.plan
        computed = from_epoch_ms(self.computed_ms)
        coverage = p.coverage
        step_ms = p.interval_minutes * MINUTE_MS
        return [NodePlanRow(self.node_id, self.hierarchy, from_epoch_ms(p.start_ms + k * step_ms),
                            p.interval_minutes, float(p.planned_kw[k]), float(p.estimate_kw[k]),
                            p.expected_sites, int(p.planned_sites[k]), int(p.carried_sites[k]),
                            p.stale_sites, float(coverage[k]), computed)
                for k in range(len(p.planned_kw))]


def _json(values: list[Any]) -> str:
    return json.dumps(values, separators=(",", ":"))


@dataclass(frozen=True)
class Taken:
    """What became of one plan: its outcome, the history row when it entered the book, and the tag
    the caller gave it (the message it came in, to dead-letter it when refused)."""

    outcome: Outcome
    accepted: Accepted | None
    tag: Any


@dataclass
class Emission:
    """What one aggregation answers: changed nodes for the live plan, rows for history (when due)."""

    nodes: list[NodeAnswer] = field(default_factory=list)
    rows: list[NodePlanRow] = field(default_factory=list)


class PlanDesk:
    """Sites, statuses and plans in; the changed nodes' aggregate plans out."""

    def __init__(self, config: DeskConfig, state: DeskState | None = None) -> None:
        if state is not None and state.version > STATE_VERSION:
            raise ValueError(f"plans state version {state.version} is newer than this code "
                             f"({STATE_VERSION}): run the newer code or start from a fresh store")
        self.config = config
        self.intake = PlanIntake()
        #: site -> ((hierarchy, node), ...): the site's current ancestors.
        self.members: dict[str, tuple[tuple[str, str], ...]] = {}
        self.statuses: dict[str, tuple[int, str]] = {}
        #: Every node's aggregate plan, kept by differences as sites change.
        self.sums = NodeSums(config.steps, config.interval_minutes, config.stale_after_ms)
        #: Sites whose plan, status or ancestors changed since the last aggregation.
        self.changed: set[str] = set()
        #: node -> (grid start, its sums) as last answered.
        self.emitted: dict[str, tuple[int, bytes]] = {}
        self.hierarchy_of: dict[str, str] = {}
        self.history_pending: dict[str, NodeAnswer] = {}
        self.last_history_ms: int | None = None
        self.waiting: dict[str, list[tuple[dict[str, Any], Any, int]]] = {}
        #: Each site's latest plan packed for the snapshot, kept as plans come (not at every snapshot).
        self.packed: dict[str, PackedPlan] = {}
        if state is not None:
            self.intake.book.plans.update((site, unpack(site, p)) for site, p in state.plans.items())
            self.packed.update(state.plans)
            self.statuses = dict(state.statuses)
            self.intake.counts.update(state.counts)
            self.waiting = {site: list(plans) for site, plans in state.waiting.items()}

    # ---- input ------------------------------------------------------------------------------

    def on_site(self, site_id: str, limits: SiteLimits | None,
                ancestors: tuple[tuple[str, str], ...]) -> list[Taken]:
        """A site's registered limits and its current (hierarchy, node) ancestors; None: retired.

        Plans of the site that waited for its registration are taken now; what became of them.
        """
        if limits is None:
            self.intake.on_site(site_id, None)
            self.members.pop(site_id, None)
            self.changed.add(site_id)
            return []
        self.changed.add(site_id)  # its ancestors or its status (below) may have changed
        if self.members.get(site_id) != ancestors or self.intake.limits.get(site_id) != limits:
            self.intake.on_site(site_id, limits, tuple(node for _, node in ancestors))
            self.members[site_id] = ancestors
            self.hierarchy_of.update((node, hierarchy) for hierarchy, node in ancestors)
        held = self.statuses.get(site_id)
        self.intake.on_status(site_id, held is None or held[1] != OFFLINE)
        return [self._take(record, tag, received) for record, tag, received in self.waiting.pop(site_id, [])]

    def on_status(self, site_id: str, status: str, event_ms: int) -> None:
        """A twin status transition; an older one than the newest seen changes nothing."""
        held = self.statuses.get(site_id)
        if held is not None and held[0] > event_ms:
            return
        self.statuses[site_id] = (event_ms, status)
        self.intake.on_status(site_id, status != OFFLINE)
        self.changed.add(site_id)

    def on_plan(self, record: dict[str, Any], received_ms: int, tag: Any = None) -> Taken | None:
        """Check and take one SitePlan value; what became of it, or None while its site is not registered
        (it waits, see :meth:`expire`)."""
        taken = self.on_plans([(record, tag)], received_ms)
        return taken[0] if taken else None

    def on_plans(self, plans: Sequence[tuple[dict[str, Any], Any]], received_ms: int) -> list[Taken]:
        """:meth:`on_plan` of several (record, tag) pairs in order, checked at once; what became of
        those whose site is registered (the others wait)."""
        ready: list[tuple[dict[str, Any], Any]] = []
        for record, tag in plans:
            site_id = str(record["site_id"])
            if site_id in self.intake.limits:
                ready.append((record, tag))
            else:
                self.waiting.setdefault(site_id, []).append((record, tag, received_ms))
        outcomes = self.intake.on_plans([record for record, _ in ready])
        return [self._taken(outcome, plan, tag, received_ms)
                for (outcome, plan), (_, tag) in zip(outcomes, ready, strict=True)]

    def expire(self, now_ms: int, everything: bool = False) -> list[Taken]:
        """Refuse the waiting plans whose site has not appeared within the grace period (``everything``:
        all of them, at the end of a bounded input, when every registration there is has been read)."""
        taken: list[Taken] = []
        grace = 0 if everything else self.config.unknown_grace_ms
        for site_id in list(self.waiting):
            plans = self.waiting[site_id]
            keep = [p for p in plans if now_ms - p[2] < grace]
            taken.extend(self._take(record, tag, received) for record, tag, received in plans
                         if now_ms - received >= grace)
            if keep:
                self.waiting[site_id] = keep
            else:
                del self.waiting[site_id]
        return taken

    def _take(self, record: Mapping[str, Any], tag: Any, received_ms: int) -> Taken:
        ((outcome, plan),) = self.intake.on_plans([record])
        return self._taken(outcome, plan, tag, received_ms)

    def _taken(self, outcome: Outcome, plan: Plan, tag: Any, received_ms: int) -> Taken:
        """What became of ``plan``: the history row when it entered the book (it may have been replaced
        since, within the same run)."""
        if outcome.outcome not in ("new", "replaced"):
            return Taken(outcome, None, tag)
        self.changed.add(plan.site_id)
        self.packed[plan.site_id] = pack(plan)
        forecast = plan.forecast_issued_at_ms
        row = SitePlanRow(plan.site_id, plan.plan_id, from_epoch_ms(plan.issued_at_ms),
                          from_epoch_ms(plan.start_ms), plan.interval_minutes, list(plan.power_kw),
                          None if forecast is None else from_epoch_ms(forecast), from_epoch_ms(received_ms))
        return Taken(outcome, Accepted(plan, row), tag)

    # ---- output -----------------------------------------------------------------------------

    def next_due_ms(self, last_emit_ms: int, emit_interval_ms: int, last_input_ms: int | None = None,
                    settle_ms: int | None = None) -> int:
        """When to aggregate next: after a change, once the input has paused for ``settle_ms`` since
        ``last_input_ms`` (a burst has ended) and at the latest ``emit_interval_ms`` after the last
        aggregation (input that keeps coming); else when the grid moves or history is due.

        Waiting out the whole interval after a burst delayed its aggregate by up to the interval for
        nothing; a pause ends the wait. Aggregations stay at least ``settle_ms`` apart.
        """
        due = [self.config.grid_start(last_emit_ms) + self.config.interval_ms]
        if self.changed:
            due.append(last_emit_ms + emit_interval_ms)
            if last_input_ms is not None and settle_ms is not None:
                due.append(max(last_input_ms, last_emit_ms) + settle_ms)
        if self.history_pending and self.last_history_ms is not None:
            due.append(self.last_history_ms + self.config.history_interval_ms)
        if self.waiting:
            oldest = min(p[2] for plans in self.waiting.values() for p in plans)
            due.append(oldest + self.config.unknown_grace_ms)
        return min(due)

    def emit(self, now_ms: int, flush_history: bool = False) -> Emission:
        """Aggregate now; the nodes whose plan changed, and the history rows when they are due.

        Only the sites that changed since the last aggregation are applied to the node sums
        (:class:`~siteplan.sums.NodeSums`); when the grid has moved to the next interval, every site.
        """
        cfg = self.config
        start = cfg.grid_start(now_ms)
        out = Emission()
        touched: set[str] = set()
        if start != self.sums.start_ms:
            self.sums.reset(start)
            self.changed.update(self.intake.ancestors)
            touched.update(self.emitted)  # a node that lost its last member answers once more, empty
        self.changed.update(self.sums.turned_stale(now_ms))
        if self.changed or touched:
            touched |= self.sums.apply({site: self._member(site) for site in self.changed}, now_ms)
            self.changed.clear()
            for node_id in sorted(touched):
                plan = self.sums.node_plan(node_id)
                if not plan.expected_sites and node_id not in self.emitted:
                    continue  # never answered, or answered empty already
                signature = (start, self.sums.signature(node_id))
                if self.emitted.get(node_id) == signature:
                    continue
                answer = NodeAnswer(node_id, self.hierarchy_of.get(node_id, ""), plan, now_ms)
                out.nodes.append(answer)
                self.history_pending[node_id] = answer
                if plan.expected_sites:
                    self.emitted[node_id] = signature
                else:
                    self.emitted.pop(node_id, None)
        if self.last_history_ms is None:
            self.last_history_ms = now_ms
        history_due = now_ms - self.last_history_ms >= cfg.history_interval_ms
        if self.history_pending and (flush_history or history_due):
            for answer in self.history_pending.values():
                out.rows.extend(answer.rows())
            self.history_pending.clear()
            self.last_history_ms = now_ms
        return out

    def _member(self, site_id: str) -> Member | None:
        """What the site adds to its nodes now, or None when it is in no node."""
        nodes = self.intake.ancestors.get(site_id)
        if not nodes:
            return None
        return Member(self.packed.get(site_id), site_id in self.intake.online, tuple(dict.fromkeys(nodes)))

    def state(self) -> DeskState:
        """Plain data to snapshot (copies: the desk goes on changing after the snapshot)."""
        return DeskState(STATE_VERSION, dict(self.packed), dict(self.statuses),
                         dict(self.intake.counts), {site: list(p) for site, p in self.waiting.items()})
