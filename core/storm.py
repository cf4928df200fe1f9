"""Raise, list and clear storm watches: the client side, shared by ``vpp storm`` and the API.

A storm watch over a node reaches the node's member sites (resolved now from
``node:{id}:sites``, as a dispatch's are) as a StormWatch record on
``storm.watch`` keyed by the node; every gateway instance reads that topic from
the beginning (like ``prices.forecast``) and hands the watch to the connected
sites it names, and to those that connect later while it is in force. A site's
planner then holds a full battery from the watch's start until it lapses
(``siteplan.planner.storm_hold``). Raising a watch over a node that has one
replaces it; clearing sends a CLEAR to the same sites. A node of more than
:data:`SITES_PER_RECORD` sites gets its watch as several records with the same
event time, each naming some of them (one record over 100,000 sites would pass
Kafka's default message size). The watches in force are
kept in the Redis hash ``storm:watches`` for listing; a lapsed one is dropped
when listed.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta

import redis
from confluent_kafka import Producer

from core import keys
from core.topics import STORM_WATCH
from schemas import packaged_codec

#: The longest storm watch one may raise (a typo, not a forecast).
MAX_WATCH = timedelta(days=7)
#: Sites named by one StormWatch record: about 100 KB of ids, far below Kafka's default 1 MB message
#: size; a watch over a larger node goes as several records with one event time (the gateway joins them).
SITES_PER_RECORD = 5_000


class StormWatchError(ValueError):
    """A storm watch that may not be raised or cleared; the message says why."""


class StormWatchNotFoundError(StormWatchError):
    """No storm watch is in force over the node."""


@dataclass(frozen=True)
class Watch:
    """A storm watch in force over a node."""

    node_id: str
    starts: datetime
    until: datetime
    sites: int
    raised_by: str
    raised_at: datetime

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "starts": self.starts.isoformat(), "until": self.until.isoformat(),
                           "raised_at": self.raised_at.isoformat()})

    @classmethod
    def from_json(cls, raw: str) -> Watch:
        data = json.loads(raw)
        when = datetime.fromisoformat
        return cls(data["node_id"], when(data["starts"]), when(data["until"]), int(data["sites"]),
                   data["raised_by"], when(data["raised_at"]))


def _members(client: redis.Redis, node_id: str) -> list[str]:
    members = client.smembers(keys.node_sites(node_id))
    return sorted(m.decode() if isinstance(m, bytes) else str(m) for m in members)


def _send(producer: Producer, node_id: str, action: str, starts: datetime, until: datetime,
          site_ids: list[str], by: str, now: datetime) -> None:
    """The watch as one StormWatch record per :data:`SITES_PER_RECORD` of its sites, all with the same
    event time (the gateway joins them), under the node's key (one partition: in order)."""
    errors: list[str] = []
    for first in range(0, max(1, len(site_ids)), SITES_PER_RECORD):
        value = packaged_codec().encode("StormWatch", {
            "node_id": node_id, "action": action, "starts": starts, "until": until,
            "site_ids": site_ids[first:first + SITES_PER_RECORD], "raised_by": by, "event_time": now})
        producer.produce(STORM_WATCH, key=node_id.encode(), value=value,
                         on_delivery=lambda err, _msg: errors.append(str(err)) if err is not None else None)
    if producer.flush(10) > 0 or errors:
        raise RuntimeError(f"the storm watch was not delivered to {STORM_WATCH}: {errors or 'timed out'}")


def raise_watch(client: redis.Redis, producer: Producer, node_id: str, starts: datetime | None,
                until: datetime, by: str, now: datetime | None = None) -> Watch:
    """Raise (or replace) the storm watch over ``node_id``; StormWatchError when it may not be."""
    now = now or datetime.now(UTC)
    starts = starts or now
    if starts.tzinfo is None or until.tzinfo is None:
        raise StormWatchError("give storm watch times with a time zone (UTC)")
    if until <= starts:
        raise StormWatchError(f"the watch lapses ({until.isoformat()}) before it begins "
                              f"({starts.isoformat()})")
    if until <= now:
        raise StormWatchError(f"the watch lapsed already ({until.isoformat()})")
    if until - max(starts, now) > MAX_WATCH:
        raise StormWatchError(f"a storm watch lasts at most {MAX_WATCH.days} days")
    site_ids = _members(client, node_id)
    if not site_ids:
        raise StormWatchNotFoundError(f"unknown node {node_id!r} (or it has no sites): "
                                      "see `vpp live` or GET /v1/nodes for node ids")
    _send(producer, node_id, "RAISE", starts, until, site_ids, by, now)
    watch = Watch(node_id, starts, until, len(site_ids), by, now)
    client.hset(keys.STORM_WATCHES, node_id, watch.to_json())
    return watch


def list_watches(client: redis.Redis, now: datetime | None = None) -> list[Watch]:
    """The storm watches in force (lapsed ones are dropped from the list as they are found)."""
    now = now or datetime.now(UTC)
    watches = []
    for node_id, raw in client.hgetall(keys.STORM_WATCHES).items():
        watch = Watch.from_json(raw.decode() if isinstance(raw, bytes) else str(raw))
        if watch.until <= now:
            client.hdel(keys.STORM_WATCHES, node_id)
            continue
        watches.append(watch)
    return sorted(watches, key=lambda w: w.node_id)


def clear_watch(client: redis.Redis, producer: Producer, node_id: str, by: str,
                now: datetime | None = None) -> Watch:
    """Lift the storm watch over ``node_id`` at its sites; StormWatchNotFoundError if none is in force."""
    now = now or datetime.now(UTC)
    held = next((w for w in list_watches(client, now) if w.node_id == node_id), None)
    if held is None:
        raise StormWatchNotFoundError(f"no storm watch is in force over {node_id!r}")
    site_ids = _members(client, node_id)
    _send(producer, node_id, "CLEAR", held.starts, held.until, site_ids, by, now)
    client.hdel(keys.STORM_WATCHES, node_id)
    return held
