"""Where registry changes go: ClickHouse history, the Redis navigation view, ``assets.changes``.

Every write is idempotent so a change can be re-published safely:
``asset_membership`` is a ReplacingMergeTree keyed by the edge (a closed edge
re-inserted with its ``valid_to`` replaces the open one); the Redis sets are
rebuilt for the touched nodes; ``assets.changes`` is compacted by site id and
each record carries an increasing ``version``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import astuple, fields
from datetime import UTC, datetime

import redis
from confluent_kafka import Producer

from assets.generator import Site
from assets.registry import Edge, Registry
from core import keys
from core.history import HistoryStore
from core.rows import MembershipEdge
from core.topics import ASSETS_CHANGES
from schemas import AvroCodec


def membership_rows(edges: Iterable[Edge], recorded_at: datetime) -> list[MembershipEdge]:
    """Registry edges as ``asset_membership`` rows."""
    return [
        MembershipEdge(e.child_id, e.child_kind, e.parent_id, e.hierarchy, e.valid_from, e.valid_to,
                       e.change_id, recorded_at)
        for e in edges
    ]


def ancestry_record(registry: Registry, site: Site, at: datetime, version: int) -> dict[str, object]:
    """The SiteAncestry value for one site as of ``at``."""
    return {
        "site_id": site.site_id,
        "version": version,
        "event_time": datetime.now(UTC),
        "effective_from": at,
        "retired": site.site_id in registry.retired and registry.retired[site.site_id] <= at,
        "capacity_kwh": site.capacity_kwh,
        "max_charge_kw": site.max_charge_kw,
        "max_discharge_kw": site.max_discharge_kw,
        "reserve_pct": site.reserve_pct,
        "solar_kwp": site.solar_kwp,
        "customer_id": site.customer_id,
        "region": site.region,
        "tariff": site.tariff,
        "paths": [
            {"hierarchy": p.hierarchy, "node_ids": list(p.node_ids), "valid_from": p.valid_from,
             "valid_to": p.valid_to}
            for p in registry.ancestry_paths(site.site_id, at)
        ],
    }


def publish_ancestries(producer: Producer, codec: AvroCodec, registry: Registry, sites: Iterable[Site],
                       at: datetime, version: int) -> int:
    """Produce the ancestry of each site to ``assets.changes``; return how many."""
    count = 0
    for site in sites:
        value = codec.encode("SiteAncestry", ancestry_record(registry, site, at, version))
        producer.produce(ASSETS_CHANGES, key=site.site_id.encode(), value=value)
        producer.poll(0)
        count += 1
    producer.flush(30)
    return count


def write_navigation(client: redis.Redis, registry: Registry, at: datetime,
                     nodes: Iterable[str] | None = None) -> None:
    """Rebuild ``node:{id}:children``, ``:parents``, ``:sites`` as of ``at`` for ``nodes`` (default all)."""
    targets = list(registry.nodes if nodes is None else nodes)
    pipe = client.pipeline(transaction=False)
    for node_id in targets:
        children = registry.children(node_id, at)
        parents = [p for h in ("electrical", "geographic") for p in registry.parents(node_id, h, at)]
        members = registry.members(node_id, at)
        for suffix, values in (("children", [e.child_id for e in children]), ("parents", parents),
                               ("sites", sorted(members))):
            key = keys.navigation(node_id, f":{suffix}")
            pipe.delete(key)
            if values:
                pipe.sadd(key, *values)
    pipe.execute()


def ancestors_of(registry: Registry, site_ids: Iterable[str], at: datetime) -> set[str]:
    """Every node above the given sites at ``at``: the Redis views a change must refresh."""
    nodes: set[str] = set()
    for site_id in site_ids:
        for chain in registry.ancestors(site_id, at).values():
            nodes.update(chain)
    return nodes


def persist_edges(store: HistoryStore, edges: Iterable[Edge], recorded_at: datetime) -> None:
    """Write edges to ClickHouse in batches of 50,000."""
    rows = membership_rows(edges, recorded_at)
    for start in range(0, len(rows), 50_000):
        store.insert_membership(rows[start:start + 50_000])


def persist_sites(store: HistoryStore, rows: list[tuple[Site, datetime, datetime | None]],
                  version: int) -> None:
    """``asset_sites`` rows: each site's record, when it was added and retired, in batches of 50,000."""
    columns = [f.name for f in fields(Site)] + ["added_at", "retired_at", "version"]
    values = [(*astuple(site), added, retired, version) for site, added, retired in rows]
    for start in range(0, len(values), 50_000):
        store.client.insert(f"{store.db}.asset_sites", values[start:start + 50_000], column_names=columns)
