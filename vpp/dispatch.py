"""Ask for a dispatch, cancel or replace it, and read where it stands: the client side of control.

The CLI (``vpp dispatch``) and the HTTP API share this module, so a request is
checked the same way wherever it comes from, and nothing reaches
``dispatch.requests`` unless it passed:

* exactly one of a node or a list of sites, each known to the registry
  (a node by its ``node:{id}:sites`` set in Redis, a site by its twin ``site:{id}``);
* a window that ends after it starts, ends in the future and lasts at most
  :data:`MAX_WINDOW`;
* a finite target no larger than :data:`MAX_KW_PER_SITE` per member site and
  :data:`MAX_TARGET_KW` in all (a typo, not an ambitious target);
* a strategy of :data:`STRATEGIES`.

The control dataflow keeps the newest status of each dispatch in the Redis
hash ``dispatch:{id}`` (the fields of DispatchStatus plus the request's window
and strategy) and lists dispatches in the sorted set ``dispatches`` (score: the
window's start, epoch ms); the history of statuses is ClickHouse
``dispatch_log``.
"""

from __future__ import annotations

import math
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from confluent_kafka import Producer

from schemas import packaged_codec
from schemas.times import epoch_ms
from vpp import kafka
from vpp.config import Settings
from vpp.live import text
from vpp.topics import DISPATCH_REQUESTS

#: Allocators the control dataflow knows; ``-open-loop`` turns the correction loop off for one dispatch.
ALLOCATORS = ("waterfill", "qp")
OPEN_LOOP_SUFFIX = "-open-loop"
STRATEGIES = (*ALLOCATORS, *(f"{name}{OPEN_LOOP_SUFFIX}" for name in ALLOCATORS))
MAX_WINDOW = timedelta(hours=24)
MAX_KW_PER_SITE = 100.0
MAX_TARGET_KW = 10_000_000.0
DISPATCH_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

STATUS_KEY = "dispatch:{}"
INDEX_KEY = "dispatches"


class DispatchRejectedError(ValueError):
    """A request that must not be sent, with a message that says what to change."""


class DispatchNotFoundError(DispatchRejectedError):
    """A cancel or replace of a dispatch the control dataflow has not reported (yet)."""


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


def check_against_registry(client: redis.Redis, spec: DispatchSpec) -> int:
    """The member count; DispatchRejectedError for unknown nodes or sites or an absurd target."""
    if spec.node_id is not None:
        members = int(client.scard(f"node:{spec.node_id}:sites"))
        if members == 0:
            raise DispatchRejectedError(f"unknown node {spec.node_id!r} (or it has no sites): "
                                   "see `vpp live` or GET /v1/nodes for node ids")
    else:
        assert spec.site_ids is not None
        pipe = client.pipeline(transaction=False)
        for site_id in spec.site_ids:
            pipe.exists(f"site:{site_id}")
        unknown = [s for s, known in zip(spec.site_ids, pipe.execute(), strict=True) if not known]
        if unknown:
            raise DispatchRejectedError(f"unknown site(s): {', '.join(unknown[:5])}"
                                   f"{' and more' if len(unknown) > 5 else ''}")
        members = len(spec.site_ids)
    if abs(spec.target_kw) > MAX_KW_PER_SITE * members:
        raise DispatchRejectedError(f"target {spec.target_kw:,.0f} kW is more than "
                                    f"{MAX_KW_PER_SITE:.0f} kW for each of the {members} sites: "
                                    "a typo? targets are in kW")
    return members


def _request(action: str, dispatch_id: str, requested_by: str, now: datetime,
             spec: DispatchSpec | None = None) -> dict[str, Any]:
    return {
        "dispatch_id": dispatch_id, "action": action,
        "node_id": spec.node_id if spec else None,
        "site_ids": list(spec.site_ids) if spec and spec.site_ids is not None else None,
        "target_kw": spec.target_kw if spec else 0.0,
        "start": spec.start if spec else now, "end": spec.end if spec else now,
        "strategy": spec.strategy if spec else "", "requested_by": requested_by, "requested_at": now,
    }


def _send(settings: Settings, record: dict[str, Any], producer: Producer | None) -> None:
    producer = producer or Producer(kafka.client_config(settings))
    value = packaged_codec().encode("DispatchRequest", record)
    producer.produce(DISPATCH_REQUESTS, key=str(record["dispatch_id"]).encode(), value=value)
    if producer.flush(10) != 0:
        raise RuntimeError(f"could not deliver the request to {DISPATCH_REQUESTS} within 10 s: "
                           f"is the broker at {settings.kafka} up? (`vpp status`)")


def submit(settings: Settings, spec: DispatchSpec, requested_by: str, client: redis.Redis,
           producer: Producer | None = None, replace: bool = False) -> str:
    """Check ``spec`` and send it as a CREATE (or REPLACE of the dispatch of the same id); its id."""
    now = datetime.now(UTC)
    spec.check(now)
    check_against_registry(client, spec)
    if replace and not client.exists(STATUS_KEY.format(spec.dispatch_id)):
        raise DispatchNotFoundError(f"no dispatch {spec.dispatch_id!r} to replace")
    _send(settings, _request("REPLACE" if replace else "CREATE", spec.dispatch_id, requested_by, now, spec),
          producer)
    return spec.dispatch_id


def cancel(settings: Settings, dispatch_id: str, requested_by: str, client: redis.Redis,
           producer: Producer | None = None) -> None:
    """Ask the control dataflow to stop a dispatch (its sites return to their own plans)."""
    if not client.exists(STATUS_KEY.format(dispatch_id)):
        raise DispatchNotFoundError(f"no dispatch {dispatch_id!r}: see `vpp dispatch list`")
    _send(settings, _request("CANCEL", dispatch_id, requested_by, datetime.now(UTC)), producer)


def read_status(client: redis.Redis, dispatch_id: str) -> dict[str, str] | None:
    """The newest status of a dispatch as stored by the control dataflow (None if it has none yet)."""
    raw: dict[Any, Any] = client.hgetall(STATUS_KEY.format(dispatch_id))
    if not raw:
        return None
    return {text(k): text(v) for k, v in raw.items()}


def list_dispatches(client: redis.Redis, since: datetime | None = None, limit: int = 100) -> list[str]:
    """Ids of dispatches whose window starts at or after ``since`` (newest first)."""
    low = epoch_ms(since) if since is not None else "-inf"
    ids: list[Any] = client.zrevrangebyscore(INDEX_KEY, "+inf", low, start=0, num=limit)
    return [text(i) for i in ids]
