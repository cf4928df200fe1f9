"""Ask for a dispatch, cancel or replace it, and read where it stands: the client side of control.

The CLI (``vpp dispatch``) and the HTTP API share this module, so a request is
checked the same way wherever it comes from, and nothing reaches
``dispatch.requests`` unless it passed:

* exactly one of a node or a list of sites, each known to the registry
  (a node by its ``node:{id}:sites`` set in Redis, a site by its twin ``site:{id}``);
* a window that ends after it starts, ends in the future and lasts at most
  :data:`~core.dispatch_spec.MAX_WINDOW`;
* a finite target no larger than :data:`~core.dispatch_spec.MAX_KW_PER_SITE` per member site and
  :data:`~core.dispatch_spec.MAX_TARGET_KW` in all (a typo, not an ambitious target);
* a strategy of :data:`~core.dispatch_spec.STRATEGIES`;
* a dispatch that starts now needs at least one eligible (ONLINE) member site
  now; one that starts in the future is judged when its window starts;
* a dispatch id not used before, unless it replaces that dispatch
  (:class:`~core.dispatch_spec.DispatchConflictError`, a 409 in the API; the
  control dataflow refuses a reused id again, for requests sent at once).

The control dataflow keeps the newest status of each dispatch in the Redis
hash ``dispatch:{id}`` (the fields of DispatchStatus plus the request's window
and strategy) and lists dispatches in the sorted set ``dispatches`` (score: the
window's start, epoch ms); the history of statuses is ClickHouse
``dispatch_log``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import redis
from confluent_kafka import Producer

from core import kafka, keys
from core.config import Settings
from core.dispatch_spec import (
    MAX_KW_PER_SITE,
    DispatchConflictError,
    DispatchNotFoundError,
    DispatchRejectedError,
    DispatchSpec,
)
from core.live import text
from core.topics import DISPATCH_REQUESTS
from schemas import packaged_codec
from schemas.times import epoch_ms


def check_against_registry(client: redis.Redis, spec: DispatchSpec) -> int:
    """The member count; DispatchRejectedError for unknown nodes or sites or an absurd target."""
    if spec.node_id is not None:
        members = int(client.scard(keys.node_sites(spec.node_id)))
        if members == 0:
            raise DispatchRejectedError(f"unknown node {spec.node_id!r} (or it has no sites): "
                                   "see `vpp live` or GET /v1/nodes for node ids")
    else:
        assert spec.site_ids is not None
        pipe = client.pipeline(transaction=False)
        for site_id in spec.site_ids:
            pipe.exists(keys.site(site_id))
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


#: Member sites whose status one round trip reads, when looking for an ONLINE one.
_STATUS_CHUNK = 1_000


def check_eligible_now(client: redis.Redis, spec: DispatchSpec, now: datetime) -> None:
    """DispatchRejectedError if the dispatch starts now and none of its member sites is ONLINE.

    A dispatch starting in the future is not judged here: the fleet may be back by then, and the control
    dataflow fails it with the reason if it is not.
    """
    if spec.start > now:
        return
    if spec.site_ids is not None:
        members = list(spec.site_ids)
    else:
        raw: set[Any] = client.smembers(keys.node_sites(spec.node_id or ""))
        members = sorted(text(m) for m in raw)
    counts: dict[str, int] = {}
    for first in range(0, len(members), _STATUS_CHUNK):
        pipe = client.pipeline(transaction=False)
        for site_id in members[first:first + _STATUS_CHUNK]:
            pipe.hget(keys.site(site_id), "status")
        for value in pipe.execute():
            state = text(value) if value else "UNKNOWN"
            if state == "ONLINE":
                return
            counts[state] = counts.get(state, 0) + 1
    seen = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    where = f"node {spec.node_id!r}" if spec.node_id is not None else "the named sites"
    raise DispatchRejectedError(f"no eligible site now: none of the {len(members)} member sites of {where} "
                                f"is ONLINE ({seen}); start it later, when the sites are back")


def _request(action: str, dispatch_id: str, requested_by: str, now: datetime,
             spec: DispatchSpec | None = None) -> dict[str, Any]:
    return {
        "dispatch_id": dispatch_id, "action": action,
        "node_id": spec.node_id if spec else None,
        "site_ids": list(spec.site_ids) if spec and spec.site_ids is not None else None,
        "target_kw": spec.target_kw if spec else 0.0,
        "start": spec.start if spec else now, "end": spec.end if spec else now,
        "strategy": spec.strategy if spec else "", "requested_by": requested_by, "requested_at": now,
        "priority": spec.priority if spec else 0,
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
    check_eligible_now(client, spec, now)
    known = bool(client.exists(keys.dispatch_status(spec.dispatch_id)))
    if replace and not known:
        raise DispatchNotFoundError(f"no dispatch {spec.dispatch_id!r} to replace")
    if not replace and known:
        raise DispatchConflictError(f"dispatch id {spec.dispatch_id!r} is already used: replace that "
                                    "dispatch (replace: true, or --replace) or choose a new id")
    _send(settings, _request("REPLACE" if replace else "CREATE", spec.dispatch_id, requested_by, now, spec),
          producer)
    return spec.dispatch_id


def cancel(settings: Settings, dispatch_id: str, requested_by: str, client: redis.Redis,
           producer: Producer | None = None) -> None:
    """Ask the control dataflow to stop a dispatch (its sites return to their own plans)."""
    if not client.exists(keys.dispatch_status(dispatch_id)):
        raise DispatchNotFoundError(f"no dispatch {dispatch_id!r}: see `vpp dispatch list`")
    _send(settings, _request("CANCEL", dispatch_id, requested_by, datetime.now(UTC)), producer)


def read_status(client: redis.Redis, dispatch_id: str) -> dict[str, str] | None:
    """The newest status of a dispatch as stored by the control dataflow (None if it has none yet)."""
    raw: dict[Any, Any] = client.hgetall(keys.dispatch_status(dispatch_id))
    if not raw:
        return None
    return {text(k): text(v) for k, v in raw.items()}


def list_dispatches(client: redis.Redis, since: datetime | None = None, limit: int = 100,
                    offset: int = 0) -> list[str]:
    """Ids of dispatches whose window starts at or after ``since`` (newest first), a page of them."""
    low = epoch_ms(since) if since is not None else "-inf"
    ids: list[Any] = client.zrevrangebyscore(keys.DISPATCH_INDEX, "+inf", low, start=offset, num=limit)
    return [text(i) for i in ids]


def count_dispatches(client: redis.Redis, since: datetime | None = None) -> int:
    """How many dispatches' windows start at or after ``since``."""
    return int(client.zcount(keys.DISPATCH_INDEX, epoch_ms(since) if since is not None else "-inf", "+inf"))
