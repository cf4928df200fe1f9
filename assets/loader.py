"""Load a fleet into the running platform: history, live navigation view and ``assets.changes``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import redis
from confluent_kafka import Producer

from assets.generator import Fleet
from assets.sinks import persist_edges, publish_ancestries, write_navigation
from schemas import packaged_codec
from vpp import history, kafka
from vpp.config import Settings


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
    finally:
        client.close()
    progress(f"writing navigation for {len(registry.nodes):,} nodes to Redis")
    with redis.Redis.from_url(settings.redis) as rds:
        write_navigation(rds, registry, at)
    progress(f"publishing {len(fleet.sites):,} site ancestries to assets.changes")
    producer = Producer(kafka.client_config(settings, **{"linger.ms": 20}))
    published = publish_ancestries(producer, packaged_codec(), registry, fleet.sites.values(), at, version)
    return LoadReport(len(fleet.sites), len(registry.nodes), len(registry.edges), published)
