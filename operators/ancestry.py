"""A site's effective-dated ancestry as the dataflows hold it, built from ``assets.changes``.

The registry publishes, for every affected site, the flattened chain of
ancestors in every hierarchy with the times each chain holds (SiteAncestry).
A new version takes effect at its ``effective_from`` and leaves earlier times to
the versions before it, so a reading is always counted under the nodes that
held at its own event time, even when the change arrives after the reading.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, NamedTuple

from core.hierarchy import PARENT_KIND, PROGRAM, SITE_PARENT_KIND
from schemas.times import epoch_ms

#: Versions kept per site: enough for changes whose effective time is still inside the lateness bound.
MAX_VERSIONS = 4


class Path(NamedTuple):
    """One chain of ancestors (nearest first) in one hierarchy, valid over [valid_from, valid_to)."""

    hierarchy: str
    node_ids: tuple[str, ...]
    valid_from_ms: int
    valid_to_ms: int | None

    def holds_at(self, t_ms: int) -> bool:
        return self.valid_from_ms <= t_ms and (self.valid_to_ms is None or t_ms < self.valid_to_ms)


class AncestryVersion(NamedTuple):
    """One published SiteAncestry: in effect from ``effective_from_ms`` until a later version."""

    version: int
    effective_from_ms: int
    retired: bool
    paths: tuple[Path, ...]


#: Chains of ancestors as the rollups use them: (hierarchy, node ids nearest first).
Chains = tuple[tuple[str, tuple[str, ...]], ...]


def node_kind(hierarchy: str, depth: int) -> str:
    """The kind of the node ``depth`` levels above a site in ``hierarchy`` (0 = its direct parent)."""
    kind: str | None = PROGRAM if hierarchy == PROGRAM else SITE_PARENT_KIND.get(hierarchy)
    for _ in range(depth):
        kind = PARENT_KIND.get(kind) if kind else None
    return kind or "node"


@dataclass(slots=True)
class Ancestry:
    """The site's limits (latest version) and its effective-dated chains of ancestors."""

    version: int
    capacity_kwh: float
    max_charge_kw: float
    max_discharge_kw: float
    reserve_pct: float
    region: str
    versions: tuple[AncestryVersion, ...]
    #: ``chains_at`` answers for [from, until): valid until the next change of membership.
    _cached: tuple[int, int | None, Chains] | None = None

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Ancestry:
        """From a decoded SiteAncestry value."""
        ancestry = cls(0, 0.0, 0.0, 0.0, 0.0, "", ())
        ancestry.merge(record)
        return ancestry

    def merge(self, record: dict[str, Any]) -> bool:
        """Take in a newer SiteAncestry; an older or repeated version changes nothing (returns False)."""
        version = int(record["version"])
        if any(v.version >= version for v in self.versions):
            return False
        paths = tuple(
            Path(sys.intern(p["hierarchy"]), tuple(sys.intern(n) for n in p["node_ids"]),
                 epoch_ms(p["valid_from"]), None if p["valid_to"] is None else epoch_ms(p["valid_to"]))
            for p in record["paths"]
        )
        new = AncestryVersion(version, epoch_ms(record["effective_from"]), bool(record["retired"]), paths)
        earlier = [v for v in self.versions if v.effective_from_ms < new.effective_from_ms]
        self.versions = (*earlier, new)[-MAX_VERSIONS:]
        self._cached = None
        self.version = version
        self.capacity_kwh = float(record["capacity_kwh"])
        self.max_charge_kw = float(record["max_charge_kw"])
        self.max_discharge_kw = float(record["max_discharge_kw"])
        self.reserve_pct = float(record["reserve_pct"])
        self.region = sys.intern(record["region"])
        return True

    def paths_at(self, t_ms: int) -> tuple[Path, ...]:
        """The chains of ancestors that hold at ``t_ms``.

        Before the first known version took effect, that version's chains are the best knowledge
        there is (a site enrolled today still reports readings stamped a little earlier).
        """
        if not self.versions:
            return ()
        current = self.versions[0]
        for v in self.versions:
            if v.effective_from_ms <= t_ms:
                current = v
        t_ms = max(t_ms, current.effective_from_ms)
        if current.retired:
            return ()
        return tuple(p for p in current.paths if p.holds_at(t_ms))

    def chains_at(self, t_ms: int) -> tuple[Chains, int | None]:
        """(hierarchy, node ids) of each chain holding at ``t_ms``, and when that may next change.

        Asked for every site at every tick, so the answer is kept until the next change.
        """
        cached = self._cached
        if cached is not None and cached[0] <= t_ms and (cached[1] is None or t_ms < cached[1]):
            return cached[2], cached[1]
        chains = tuple((p.hierarchy, p.node_ids) for p in self.paths_at(t_ms))
        until = self.next_change_after(t_ms)
        self._cached = (t_ms, until, chains)
        return chains, until

    def nodes_at(self, t_ms: int) -> tuple[str, ...]:
        """Every ancestor node of the site at ``t_ms``, in every hierarchy."""
        return tuple(node for path in self.paths_at(t_ms) for node in path.node_ids)

    def next_change_after(self, t_ms: int) -> int | None:
        """The first time after ``t_ms`` at which :meth:`nodes_at` may give another answer."""
        times = [v.effective_from_ms for v in self.versions]
        for v in self.versions:
            for p in v.paths:
                times.append(p.valid_from_ms)
                if p.valid_to_ms is not None:
                    times.append(p.valid_to_ms)
        later = [t for t in times if t > t_ms]
        return min(later) if later else None
