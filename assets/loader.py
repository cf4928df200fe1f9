"""Load a fleet into the running platform: history, live navigation view and ``assets.changes``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import UTC, datetime

import redis
from clickhouse_connect.driver.client import Client
from confluent_kafka import Producer

from assets.generator import Fleet, Site
from assets.registry import Edge, Node, Registry
from assets.sinks import persist_edges, persist_sites, publish_ancestries, write_navigation
from core import history, kafka
from core.config import Settings
from schemas import packaged_codec


@dataclass(frozen=True)
class LoadReport:
    """What a load wrote."""

    sites: int
    nodes: int
    edges: int
    published: int


def load_fleet(settings: Settings, fleet: Fleet, at: datetime, version: int,
               progress: Callable[[str], None]) -> LoadReport:
    """Write every edge to ClickHouse, the navigation sets to Redis and each site's ancestry to Kafka."""
    registry = fleet.registry
    progress(f"writing {len(registry.edges):,} membership edges to ClickHouse")
    client = history.connect(settings)
    try:
        persist_edges(history.HistoryStore(client, settings.clickhouse_database), registry.edges, at)
        _persist_registry(client, settings.clickhouse_database, fleet, version)
    finally:
        client.close()
    return _publish(settings, fleet, at, version, progress)


def _persist_registry(client: Client, db: str, fleet: Fleet, version: int) -> None:
    registry = fleet.registry
    client.insert(f"{db}.asset_nodes", [(n.node_id, n.kind, n.name) for n in registry.nodes.values()],
                  column_names=["node_id", "kind", "name"])
    persist_sites(history.HistoryStore(client, db),
                  [(site, registry.sites[site.site_id], registry.retired.get(site.site_id))
                   for site in fleet.sites.values()], version)


def restore_fleet(settings: Settings) -> Fleet | None:
    """Rebuild the fleet from ClickHouse (None if none was ever loaded)."""
    client = history.connect(settings)
    db = settings.clickhouse_database
    try:
        columns = [f.name for f in fields(Site)]
        site_rows = client.query(
            f"SELECT {', '.join(columns)}, added_at, retired_at FROM {db}.asset_sites FINAL"
        ).result_rows
        if not site_rows:
            return None
        nodes = [Node(*row) for row in client.query(f"SELECT node_id, kind, name FROM {db}.asset_nodes FINAL")
                 .result_rows]
        edge_rows = client.query(
            f"SELECT child_id, child_kind, parent_id, hierarchy, valid_from, valid_to, change_id "
            f"FROM {db}.asset_membership FINAL"
        ).result_rows
    finally:
        client.close()
    sites = {row[0]: Site(*row[: len(columns)]) for row in site_rows}
    added = {row[0]: _utc(row[-2]) for row in site_rows}
    retired = {row[0]: _utc(row[-1]) for row in site_rows if row[-1] is not None}
    edges = [Edge(c, k, p, h, _utc(f), _utc(t) if t else None, ch) for c, k, p, h, f, t, ch in edge_rows]
    return Fleet(sites, Registry.from_history(nodes, added, retired, edges))


def republish(settings: Settings, at: datetime, progress: Callable[[str], None]) -> LoadReport | None:
    """After a restart: rebuild the fleet from ClickHouse and re-publish Redis and assets.changes."""
    fleet = restore_fleet(settings)
    if fleet is None:
        return None
    return _publish(settings, fleet, at, int(at.timestamp() * 1000), progress)


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _publish(settings: Settings, fleet: Fleet, at: datetime, version: int,
             progress: Callable[[str], None]) -> LoadReport:
    registry = fleet.registry
    progress(f"writing navigation for {len(registry.nodes):,} nodes to Redis")
    with redis.Redis.from_url(settings.redis) as rds:
        write_navigation(rds, registry, at)
    progress(f"publishing {len(fleet.sites):,} site ancestries to assets.changes")
    producer = Producer(kafka.client_config(settings, **{"linger.ms": 20}))
    published = publish_ancestries(producer, packaged_codec(), registry, fleet.sites.values(), at, version)
    return LoadReport(len(fleet.sites), len(registry.nodes), len(registry.edges), published)
