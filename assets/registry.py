"""The asset registry's pure core: sites and nodes in effective-dated hierarchies.

Relationships change over time (a site moves feeder, a feeder is re-parented,
a customer joins a program), and every aggregate and dispatch must use the
relationships that held at its own time. So the registry never overwrites an
edge: a change closes the open edge at its effective time ``at`` and opens a
new one from ``at``. Intervals are half-open, ``[valid_from, valid_to)``;
``valid_to=None`` means still valid.

Rules that keep history consistent: a change to an edge must be effective
strictly after that edge's ``valid_from`` (no rewriting the past); a parent
must be of the kind one level up (site -> feeder -> substation -> region,
site -> postcode -> county -> state, site -> program), which also makes
cycles impossible; a failed operation changes nothing.

No I/O here: persistence (ClickHouse ``asset_membership``, Redis, the
``assets.changes`` topic) wraps this core.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace
from datetime import datetime

from core.hierarchy import (
    HIERARCHY_OF_KIND,
    PARENT_KIND,
    PROGRAM,
    SITE_PARENT_KIND,
    TREE_HIERARCHIES,
)


class RegistryError(ValueError):
    """An operation was refused; the registry is unchanged and the message says why."""


@dataclass(frozen=True)
class Node:
    """A node of one hierarchy: a feeder, a county, a VPP program..."""

    node_id: str
    kind: str
    name: str

    @property
    def hierarchy(self) -> str:
        """The hierarchy this node belongs to."""
        return HIERARCHY_OF_KIND[self.kind]


@dataclass(frozen=True)
class Edge:
    """``child`` was under ``parent`` in ``hierarchy`` during [valid_from, valid_to)."""

    child_id: str
    child_kind: str
    parent_id: str
    hierarchy: str
    valid_from: datetime
    valid_to: datetime | None
    change_id: str

    def holds_at(self, at: datetime) -> bool:
        """True if this edge is in force at ``at``."""
        return self.valid_from <= at and (self.valid_to is None or at < self.valid_to)


class Registry:
    """Nodes, site ids and the full edge history, with queries at any time."""

    def __init__(self) -> None:
        self.nodes: dict[str, Node] = {}
        self.sites: dict[str, datetime] = {}  # site id -> when it was added
        self.retired: dict[str, datetime] = {}
        self._edges: list[Edge] = []
        self._by_child: dict[tuple[str, str], list[int]] = defaultdict(list)  # (hierarchy, child) -> edges
        self._by_parent: dict[str, list[int]] = defaultdict(list)
        self._changes = 0

    @classmethod
    def from_history(cls, nodes: list[Node], added: dict[str, datetime], retired: dict[str, datetime],
                     edges: list[Edge]) -> Registry:
        """Rebuild a registry from its durable form (nodes, site add/retire times, every edge)."""
        registry = cls()
        registry.nodes = {node.node_id: node for node in nodes}
        registry.sites = dict(added)
        registry.retired = dict(retired)
        for edge in sorted(edges, key=lambda e: (e.valid_from, e.change_id)):
            index = len(registry._edges)
            registry._edges.append(edge)
            registry._by_child[(edge.hierarchy, edge.child_id)].append(index)
            registry._by_parent[edge.parent_id].append(index)
        registry._changes = max((int(e.change_id.rsplit("-", 1)[-1]) for e in edges), default=0)
        return registry

    # -- history ---------------------------------------------------------------

    @property
    def edges(self) -> list[Edge]:
        """Every edge ever recorded, in the order they were opened (closed ones included)."""
        return list(self._edges)

    def edges_of(self, child_id: str) -> list[Edge]:
        """Every edge, open or closed, below which ``child_id`` hangs: what a change to it touched."""
        return [self._edges[i] for (_, child), indices in self._by_child.items() if child == child_id
                for i in indices]

    def _change_id(self) -> str:
        self._changes += 1
        return f"chg-{self._changes:08d}"

    def _open(self, child: str, kind: str, parent: str, hierarchy: str, at: datetime, change: str) -> None:
        index = len(self._edges)
        self._edges.append(Edge(child, kind, parent, hierarchy, at, None, change))
        self._by_child[(hierarchy, child)].append(index)
        self._by_parent[parent].append(index)

    def _close(self, index: int, at: datetime) -> None:
        self._edges[index] = replace(self._edges[index], valid_to=at)

    def _open_edges(self, hierarchy: str, child: str) -> list[int]:
        return [i for i in self._by_child.get((hierarchy, child), []) if self._edges[i].valid_to is None]

    # -- checks ----------------------------------------------------------------

    def _node(self, node_id: str) -> Node:
        if node_id not in self.nodes:
            raise RegistryError(f"unknown node {node_id!r}: add it first")
        return self.nodes[node_id]

    def _active_site(self, site_id: str, at: datetime) -> None:
        if site_id not in self.sites:
            raise RegistryError(f"unknown site {site_id!r}")
        if site_id in self.retired:
            raise RegistryError(f"site {site_id!r} was retired at {self.retired[site_id].isoformat()}")
        if at <= self.sites[site_id]:
            raise RegistryError(f"site {site_id!r} was added at {self.sites[site_id].isoformat()}; "
                                "changes must be effective after that")

    def _after_open_edges(self, indices: list[int], at: datetime) -> None:
        for index in indices:
            edge = self._edges[index]
            if at <= edge.valid_from:
                raise RegistryError(
                    f"{edge.child_id} is under {edge.parent_id} from {edge.valid_from.isoformat()}; a change "
                    f"effective at {at.isoformat()} would overlap it: changes must be effective later"
                )

    def _parent_of_kind(self, parent_id: str, expected: str, what: str) -> None:
        parent = self._node(parent_id)
        if parent.kind != expected:
            raise RegistryError(f"{what} must be a {expected}, but {parent_id!r} is a {parent.kind}")

    # -- operations ------------------------------------------------------------

    def add_node(self, node: Node, parent_id: str | None, at: datetime) -> str:
        """Add a node under ``parent_id`` (None for a root kind); return the change id."""
        if node.node_id in self.nodes or node.node_id in self.sites:
            raise RegistryError(f"id {node.node_id!r} already exists")
        if node.kind not in PARENT_KIND:
            raise RegistryError(f"unknown node kind {node.kind!r}; one of {sorted(PARENT_KIND)}")
        expected = PARENT_KIND[node.kind]
        if expected is None and parent_id is not None:
            raise RegistryError(f"a {node.kind} is a root and has no parent")
        if expected is not None:
            if parent_id is None:
                raise RegistryError(f"a {node.kind} needs a parent {expected}")
            self._parent_of_kind(parent_id, expected, f"the parent of {node.kind} {node.node_id!r}")
        change = self._change_id()
        self.nodes[node.node_id] = node
        if parent_id is not None:
            self._open(node.node_id, node.kind, parent_id, node.hierarchy, at, change)
        return change

    def add_site(self, site_id: str, parents: dict[str, str], programs: list[str], at: datetime) -> str:
        """Add a site under a feeder and a postcode, enrolled in ``programs``."""
        if site_id in self.sites or site_id in self.nodes:
            raise RegistryError(f"id {site_id!r} already exists")
        if set(parents) != set(TREE_HIERARCHIES):
            raise RegistryError(f"a site needs exactly one parent in each of {list(TREE_HIERARCHIES)}")
        for hierarchy, parent in parents.items():
            self._parent_of_kind(parent, SITE_PARENT_KIND[hierarchy], f"a site's {hierarchy} parent")
        for program in programs:
            self._parent_of_kind(program, "program", "an enrolment")
        if len(set(programs)) != len(programs):
            raise RegistryError(f"site {site_id!r} is enrolled twice in the same program")
        change = self._change_id()
        self.sites[site_id] = at
        for hierarchy in TREE_HIERARCHIES:
            self._open(site_id, "site", parents[hierarchy], hierarchy, at, change)
        for program in programs:
            self._open(site_id, "site", program, PROGRAM, at, change)
        return change

    def move_site(self, site_id: str, hierarchy: str, new_parent: str, at: datetime) -> str:
        """Move a site to another feeder or postcode from ``at`` on."""
        if hierarchy not in TREE_HIERARCHIES:
            raise RegistryError(f"sites move in {list(TREE_HIERARCHIES)}; use enroll/unenroll for programs")
        self._active_site(site_id, at)
        self._parent_of_kind(new_parent, SITE_PARENT_KIND[hierarchy], f"a site's {hierarchy} parent")
        (current,) = self._open_edges(hierarchy, site_id)
        if self._edges[current].parent_id == new_parent:
            raise RegistryError(f"site {site_id!r} is already under {new_parent!r}")
        self._after_open_edges([current], at)
        change = self._change_id()
        self._close(current, at)
        self._open(site_id, "site", new_parent, hierarchy, at, change)
        return change

    def reparent_node(self, node_id: str, new_parent: str, at: datetime) -> str:
        """Move a node (and so every site below it) under another parent from ``at`` on."""
        node = self._node(node_id)
        expected = PARENT_KIND[node.kind]
        if expected is None:
            raise RegistryError(f"a {node.kind} is a root and cannot be re-parented")
        self._parent_of_kind(new_parent, expected, f"the parent of {node.kind} {node_id!r}")
        (current,) = self._open_edges(node.hierarchy, node_id)
        if self._edges[current].parent_id == new_parent:
            raise RegistryError(f"{node_id!r} is already under {new_parent!r}")
        self._after_open_edges([current], at)
        change = self._change_id()
        self._close(current, at)
        self._open(node_id, node.kind, new_parent, node.hierarchy, at, change)
        return change

    def retire_site(self, site_id: str, at: datetime) -> str:
        """Retire a site: every open edge closes at ``at``."""
        self._active_site(site_id, at)
        open_edges = [i for h in (*TREE_HIERARCHIES, PROGRAM) for i in self._open_edges(h, site_id)]
        self._after_open_edges(open_edges, at)
        change = self._change_id()
        for index in open_edges:
            self._close(index, at)
        self.retired[site_id] = at
        return change

    def enroll(self, site_id: str, program_id: str, at: datetime) -> str:
        """Enrol a site in a program from ``at`` on."""
        self._active_site(site_id, at)
        self._parent_of_kind(program_id, "program", "an enrolment")
        if any(self._edges[i].parent_id == program_id for i in self._open_edges(PROGRAM, site_id)):
            raise RegistryError(f"site {site_id!r} is already enrolled in {program_id!r}")
        change = self._change_id()
        self._open(site_id, "site", program_id, PROGRAM, at, change)
        return change

    def unenroll(self, site_id: str, program_id: str, at: datetime) -> str:
        """End a site's enrolment in a program at ``at``."""
        self._active_site(site_id, at)
        matching = [i for i in self._open_edges(PROGRAM, site_id) if self._edges[i].parent_id == program_id]
        if not matching:
            raise RegistryError(f"site {site_id!r} is not enrolled in {program_id!r}")
        self._after_open_edges(matching, at)
        change = self._change_id()
        self._close(matching[0], at)
        return change

    # -- queries ---------------------------------------------------------------

    def parents(self, child_id: str, hierarchy: str, at: datetime) -> list[str]:
        """The parents of a site or node in ``hierarchy`` at ``at`` (several only for programs)."""
        return [self._edges[i].parent_id for i in self._by_child.get((hierarchy, child_id), [])
                if self._edges[i].holds_at(at)]

    def children(self, node_id: str, at: datetime) -> list[Edge]:
        """The edges to a node's direct children (nodes and sites) in force at ``at``."""
        return [self._edges[i] for i in self._by_parent.get(node_id, []) if self._edges[i].holds_at(at)]

    def members(self, node_id: str, at: datetime) -> frozenset[str]:
        """Every site in the subtree of ``node_id`` at ``at``."""
        return self.subtree(node_id, at)[1]

    def subtree(self, node_id: str, at: datetime) -> tuple[frozenset[str], frozenset[str]]:
        """The nodes and the sites below ``node_id`` at ``at``."""
        self._node(node_id)
        nodes: set[str] = set()
        sites: set[str] = set()
        stack = [node_id]
        while stack:
            for edge in self.children(stack.pop(), at):
                if edge.child_kind == "site":
                    sites.add(edge.child_id)
                else:
                    nodes.add(edge.child_id)
                    stack.append(edge.child_id)
        return frozenset(nodes), frozenset(sites)

    def ancestors(self, site_id: str, at: datetime) -> dict[str, list[str]]:
        """Per hierarchy, the site's ancestors at ``at``, nearest first (programs: all of them)."""
        if site_id not in self.sites:
            raise RegistryError(f"unknown site {site_id!r}")
        chains: dict[str, list[str]] = {}
        for hierarchy in TREE_HIERARCHIES:
            chain: list[str] = []
            current = self.parents(site_id, hierarchy, at)
            while current:
                chain.append(current[0])
                current = self.parents(current[0], hierarchy, at)
            chains[hierarchy] = chain
        chains[PROGRAM] = sorted(self.parents(site_id, PROGRAM, at))
        return chains

    def ancestry_paths(self, site_id: str, at: datetime) -> list[AncestryPath]:
        """The site's ancestor chains at ``at``, each with the interval over which that exact chain holds.

        A chain holds from the latest ``valid_from`` of its edges to the earliest
        ``valid_to``: re-parenting the feeder changes the site's chain from then on.
        This flattened form is what ``assets.changes`` carries, so dataflows never
        walk the tree per message.
        """
        paths = []
        for hierarchy in (*TREE_HIERARCHIES, PROGRAM):
            for first in self._holding(site_id, hierarchy, at):
                chain = [first]
                while hierarchy != PROGRAM and (up := self._holding(chain[-1].parent_id, hierarchy, at)):
                    chain.append(up[0])
                ends = [e.valid_to for e in chain if e.valid_to is not None]
                paths.append(AncestryPath(
                    hierarchy=hierarchy,
                    node_ids=tuple(e.parent_id for e in chain),
                    valid_from=max(e.valid_from for e in chain),
                    valid_to=min(ends) if ends else None,
                ))
        return paths

    def _holding(self, child_id: str, hierarchy: str, at: datetime) -> list[Edge]:
        return [self._edges[i] for i in self._by_child.get((hierarchy, child_id), [])
                if self._edges[i].holds_at(at)]


@dataclass(frozen=True)
class AncestryPath:
    """A site's chain of ancestors in one hierarchy (nearest first) and when it holds."""

    hierarchy: str
    node_ids: tuple[str, ...]
    valid_from: datetime
    valid_to: datetime | None
