"""Registry operations applied end to end: validate, then persist, refresh Redis, publish.

The pure :class:`~assets.registry.Registry` decides (and refuses bad input
without changing anything); this service writes what a successful change
touched: the child's edges to ``asset_membership``, the navigation sets of
every node above the affected sites before and after the change, and the new
ancestry of each affected site on ``assets.changes``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import redis
from clickhouse_connect.driver.client import Client
from confluent_kafka import Producer

from assets.generator import Fleet, Site
from assets.sinks import ancestors_of, persist_edges, persist_sites, publish_ancestries, write_navigation
from core.history import HistoryStore
from schemas import AvroCodec
from schemas.times import epoch_ms


class AssetService:
    """One fleet's registry wired to its sinks."""

    def __init__(self, fleet: Fleet, client: Client, rds: redis.Redis, producer: Producer,
                 codec: AvroCodec, database: str = "vpp") -> None:
        self.fleet = fleet
        self.store = HistoryStore(client, database)
        self.rds = rds
        self.producer = producer
        self.codec = codec

    def add_site(self, site: Site, parents: dict[str, str], programs: list[str], at: datetime) -> str:
        """Add a site under ``parents`` (one per hierarchy), enrolled in ``programs``, and publish it.

        Besides what every change writes, a new site gets its record in ``asset_sites``, which is
        what :func:`assets.loader.restore_fleet` rebuilds the fleet from.
        """
        registry = self.fleet.registry
        change_id = registry.add_site(site.site_id, parents, programs, at)  # RegistryError: nothing changed
        self.fleet.sites[site.site_id] = site
        persist_edges(self.store, registry.edges_of(site.site_id), at)
        persist_sites(self.store, [(site, at, None)], version=epoch_ms(at))
        write_navigation(self.rds, registry, at, ancestors_of(registry, {site.site_id}, at))
        publish_ancestries(self.producer, self.codec, registry, [site], at, version=epoch_ms(at))
        return change_id

    def move_site(self, site_id: str, hierarchy: str, new_parent: str, at: datetime) -> str:
        """Move a site (see :meth:`Registry.move_site`) and publish the change."""
        return self._apply(site_id, {site_id}, at,
                           lambda: self.fleet.registry.move_site(site_id, hierarchy, new_parent, at))

    def reparent_node(self, node_id: str, new_parent: str, at: datetime) -> str:
        """Re-parent a node and every site below it, and publish the change."""
        affected = self.fleet.registry.members(node_id, at)
        return self._apply(node_id, affected, at,
                           lambda: self.fleet.registry.reparent_node(node_id, new_parent, at))

    def retire_site(self, site_id: str, at: datetime) -> str:
        """Retire a site and publish the change."""
        return self._apply(site_id, {site_id}, at, lambda: self.fleet.registry.retire_site(site_id, at))

    def enroll(self, site_id: str, program_id: str, at: datetime) -> str:
        """Enrol a site in a program and publish the change."""
        return self._apply(site_id, {site_id}, at,
                           lambda: self.fleet.registry.enroll(site_id, program_id, at))

    def unenroll(self, site_id: str, program_id: str, at: datetime) -> str:
        """End an enrolment and publish the change."""
        return self._apply(site_id, {site_id}, at,
                           lambda: self.fleet.registry.unenroll(site_id, program_id, at))

    def _apply(self, child_id: str, affected: set[str] | frozenset[str], at: datetime,
               change: Callable[[], str]) -> str:
        registry = self.fleet.registry
        before = ancestors_of(registry, affected, at) | self._node_and_ancestors(child_id, at)
        change_id = change()  # raises RegistryError, having changed nothing
        persist_edges(self.store, registry.edges_of(child_id), at)
        touched = before | ancestors_of(registry, affected, at) | self._node_and_ancestors(child_id, at)
        write_navigation(self.rds, registry, at, touched)
        publish_ancestries(self.producer, self.codec, registry, [self.fleet.sites[s] for s in affected], at,
                           version=epoch_ms(at))
        return change_id

    def _node_and_ancestors(self, child_id: str, at: datetime) -> set[str]:
        """A re-parented node and its chain up, whose navigation sets a change alters."""
        registry = self.fleet.registry
        if child_id not in registry.nodes:
            return set()
        hierarchy = registry.nodes[child_id].hierarchy
        chain = {child_id}
        current = registry.parents(child_id, hierarchy, at)
        while current:
            chain.add(current[0])
            current = registry.parents(current[0], hierarchy, at)
        return chain
