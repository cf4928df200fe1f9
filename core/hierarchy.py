"""The hierarchies a site belongs to, and which kind of node may be the parent of which.

Domain vocabulary shared by the asset registry (which enforces it), the
telemetry rollups (which walk it) and the API (which navigates it).
"""

from __future__ import annotations

ELECTRICAL = "electrical"
GEOGRAPHIC = "geographic"
PROGRAM = "program"
TREE_HIERARCHIES = (ELECTRICAL, GEOGRAPHIC)

#: The kind a node's parent must have (None: a root), and the hierarchy of each kind.
PARENT_KIND: dict[str, str | None] = {
    "feeder": "substation", "substation": "region", "region": None,
    "postcode": "county", "county": "state", "state": None,
    "program": None,
}
HIERARCHY_OF_KIND: dict[str, str] = {
    "feeder": ELECTRICAL, "substation": ELECTRICAL, "region": ELECTRICAL,
    "postcode": GEOGRAPHIC, "county": GEOGRAPHIC, "state": GEOGRAPHIC,
    "program": PROGRAM,
}
#: The kind of a site's direct parent in each tree hierarchy.
SITE_PARENT_KIND = {ELECTRICAL: "feeder", GEOGRAPHIC: "postcode"}
