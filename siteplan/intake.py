"""What the plans dataflow holds: sites' limits and status, the latest plans, counts. Pure, no I/O.

The state of the one step that takes ``plans.site`` (with the sites' limits and
ancestors, which the dataflow reads from ``assets.changes`` through
``operators.ancestry``, and ``twin.status`` for which sites are online) and
answers the aggregate plan of every node. Every SitePlan gets an outcome:
accepted into the book ("new", "replaced"), harmless ("replayed", "late"), or
rejected with the reason :func:`siteplan.aggregate.check_plan` gives (the
dead-letter topic's ``error``); each outcome is counted.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from siteplan.aggregate import NodePlan, Plan, PlanBook, SiteLimits, aggregate, check_plans


@dataclass(frozen=True)
class Outcome:
    """What happened to one SitePlan record: its outcome and, when rejected, why."""

    site_id: str
    outcome: str
    reason: str | None = None


@dataclass
class PlanIntake:
    """Sites' limits and ancestors, who is online, the plan book and the outcome counts."""

    limits: dict[str, SiteLimits] = field(default_factory=dict)
    ancestors: dict[str, tuple[str, ...]] = field(default_factory=dict)
    online: set[str] = field(default_factory=set)
    book: PlanBook = field(default_factory=PlanBook)
    soc_pct: dict[str, float] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)

    def on_site(self, site_id: str, limits: SiteLimits | None, ancestors: tuple[str, ...] = ()) -> None:
        """A site's registered limits and its current ancestor nodes; None limits: the site retired."""
        if limits is None:
            self.limits.pop(site_id, None)
            self.ancestors.pop(site_id, None)
            return
        self.limits[site_id] = limits
        self.ancestors[site_id] = ancestors

    def on_status(self, site_id: str, online: bool, soc_pct: float | None = None) -> None:
        """A site went online or offline (twin status); its state of charge when known."""
        if online:
            self.online.add(site_id)
        else:
            self.online.discard(site_id)
        if soc_pct is not None:
            self.soc_pct[site_id] = soc_pct

    def on_plan(self, record: Mapping[str, Any]) -> Outcome:
        """Check a SitePlan value against the site's limits and take it into the book; what happened."""
        return self.on_plans([record])[0][0]

    def on_plans(self, records: Sequence[Mapping[str, Any]]) -> list[tuple[Outcome, Plan]]:
        """:meth:`on_plan` of several values in order, checked at once (:func:`check_plans`); each
        outcome with its plan."""
        plans = [Plan.from_record(record) for record in records]
        reasons = check_plans(plans, [self.limits.get(p.site_id) for p in plans],
                              [self.soc_pct.get(p.site_id) for p in plans])
        outcomes = []
        for plan, reason in zip(plans, reasons, strict=True):
            outcome = "rejected" if reason is not None else self.book.offer(plan)
            self.counts[outcome] += 1
            outcomes.append((Outcome(plan.site_id, outcome, reason), plan))
        return outcomes

    def node_plans(self, start_ms: int, steps: int, interval_minutes: int = 15,
                   stale_before_ms: int | None = None) -> dict[str, NodePlan]:
        """Every node's aggregate plan from the latest plans of its current member sites."""
        members = {site: nodes for site, nodes in self.ancestors.items() if nodes}
        return aggregate(self.book, members, self.online, start_ms, steps, interval_minutes, stale_before_ms)
