"""What a dispatch request is and the checks it must pass on its own: pure, no client.

The client (:mod:`core.dispatch`), the API and the control dataflow all check
requests with :meth:`DispatchSpec.check`, so a request is refused the same
way wherever it comes from.
"""

from __future__ import annotations

import math
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

#: Allocators the control dataflow knows; ``-open-loop`` turns the correction loop off for one dispatch.
ALLOCATORS = ("waterfill", "qp")
OPEN_LOOP_SUFFIX = "-open-loop"
STRATEGIES = (*ALLOCATORS, *(f"{name}{OPEN_LOOP_SUFFIX}" for name in ALLOCATORS))
MAX_WINDOW = timedelta(hours=24)
MAX_KW_PER_SITE = 100.0
MAX_TARGET_KW = 10_000_000.0
DISPATCH_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
#: Priorities a dispatch may ask for: higher wins sites that several dispatches want at once.
MIN_PRIORITY, MAX_PRIORITY = 0, 1000


class DispatchRejectedError(ValueError):
    """A request that must not be sent, with a message that says what to change."""


class DispatchNotFoundError(DispatchRejectedError):
    """A cancel or replace of a dispatch the control dataflow has not reported (yet)."""


class DispatchConflictError(DispatchRejectedError):
    """A new dispatch under an id that is already used (without ``replace``)."""


def parse_strategy(strategy: str) -> tuple[str, bool]:
    """``(allocator, correction on)`` of a strategy name; raises DispatchRejectedError for an unknown one."""
    if strategy not in STRATEGIES:
        raise DispatchRejectedError(f"unknown strategy {strategy!r}: use one of {', '.join(STRATEGIES)}")
    return strategy.removesuffix(OPEN_LOOP_SUFFIX), not strategy.endswith(OPEN_LOOP_SUFFIX)


def new_dispatch_id() -> str:
    """A fresh dispatch id (also the Kafka key and the prefix of every command id of the dispatch)."""
    return f"d-{uuid.uuid4().hex[:16]}"


@dataclass(frozen=True)
class DispatchSpec:
    """What an operator asks for: ``target_kw`` (positive discharges) from a node or sites over a window."""

    target_kw: float
    start: datetime
    end: datetime
    node_id: str | None = None
    site_ids: tuple[str, ...] | None = None
    strategy: str = "waterfill"
    dispatch_id: str = field(default_factory=new_dispatch_id)
    priority: int = MIN_PRIORITY

    def check(self, now: datetime) -> None:
        """Raise DispatchRejectedError unless the request makes sense on its own (no registry needed)."""
        if (self.node_id is None) == (self.site_ids is None):
            raise DispatchRejectedError("name either a node or a list of sites, not both and not neither")
        if self.site_ids is not None and not self.site_ids:
            raise DispatchRejectedError("the list of sites is empty")
        if not DISPATCH_ID.match(self.dispatch_id):
            raise DispatchRejectedError(f"dispatch id {self.dispatch_id!r} must be 1-64 of A-Z a-z 0-9 _ . -")
        if not math.isfinite(self.target_kw):
            raise DispatchRejectedError(f"target {self.target_kw} kW is not a number")
        if abs(self.target_kw) > MAX_TARGET_KW:
            raise DispatchRejectedError(f"target {self.target_kw:,.0f} kW is beyond {MAX_TARGET_KW:,.0f} kW: "
                                   "a typo? targets are in kW")
        if self.end <= self.start:
            raise DispatchRejectedError(f"the window ends ({self.end.isoformat()}) before it starts "
                                   f"({self.start.isoformat()})")
        if self.end - self.start > MAX_WINDOW:
            raise DispatchRejectedError(f"the window lasts {self.end - self.start}, longer than {MAX_WINDOW}")
        if self.end <= now:
            raise DispatchRejectedError(f"the window ended already ({self.end.isoformat()})")
        parse_strategy(self.strategy)
        if not MIN_PRIORITY <= self.priority <= MAX_PRIORITY:
            raise DispatchRejectedError(f"priority {self.priority} is outside {MIN_PRIORITY}..{MAX_PRIORITY}")
