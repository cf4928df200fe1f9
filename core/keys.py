"""Every Redis key of the platform, spelled once.

The live twin and the navigation sets are written by the telemetry dataflow
and the asset registry and read by control, the API and the CLI; the dispatch
status by the control dataflow; routes, inboxes and revocations by the
gateways. Grep a key's prefix here to find its writers and readers.
"""

from __future__ import annotations

SITE_PREFIX = "site:"
NODE_PREFIX = "node:"
NAVIGATION_SUFFIXES = (":children", ":parents", ":sites")

#: Sorted set of dispatch ids scored by the window's start (epoch ms).
DISPATCH_INDEX = "dispatches"
#: Set of revoked device-token ids (jti), checked at every handshake and heartbeat.
REVOKED_TOKENS = "gateway:revoked"
ROUTE_PREFIX = "gateway:route:"
INBOX_PREFIX = "gateway:inbox:"
#: Hash of the storm watches in force: node id -> JSON (starts, until, sites, raised_by, raised_at).
STORM_WATCHES = "storm:watches"


def site(site_id: str) -> str:
    """The twin hash of a site: latest telemetry, status, last_seen, ancestry version."""
    return f"{SITE_PREFIX}{site_id}"


def node(node_id: str) -> str:
    """The live aggregate hash of a node."""
    return f"{NODE_PREFIX}{node_id}"


def node_children(node_id: str) -> str:
    """The set of a node's current children in its hierarchy."""
    return f"{NODE_PREFIX}{node_id}:children"


def node_parents(node_id: str) -> str:
    """The set of a node's current parents (one per hierarchy)."""
    return f"{NODE_PREFIX}{node_id}:parents"


def node_sites(node_id: str) -> str:
    """The set of a node's current member sites (what a dispatch of the node resolves to)."""
    return f"{NODE_PREFIX}{node_id}:sites"


def navigation(node_id: str, suffix: str) -> str:
    """One of a node's navigation sets by its suffix (one of :data:`NAVIGATION_SUFFIXES`)."""
    return f"{NODE_PREFIX}{node_id}{suffix}"


def dispatch_status(dispatch_id: str) -> str:
    """The newest status of a dispatch (fields of DispatchStatus plus window and strategy)."""
    return f"dispatch:{dispatch_id}"


def route(site_id: str) -> str:
    """Which gateway instance holds a site's connection."""
    return f"{ROUTE_PREFIX}{site_id}"


def inbox(instance_id: str) -> str:
    """The capped stream of commands other instances forward to one gateway instance."""
    return f"{INBOX_PREFIX}{instance_id}"


def node_plan(node_id: str) -> str:
    """The live aggregate plan of a node (plans dataflow): intervals, planned and estimated kW, coverage."""
    return f"plan:node:{node_id}"


def bid_last_market(region: str) -> str:
    """The newest market-data artifact a bidding workflow fetched for a price region (its fallback)."""
    return f"bid:last_market:{region}"


def bid_scheduled(workflow_id: str) -> str:
    """Set (with an expiry) when the bid scheduler has asked for a run: a restarted scheduler asks once."""
    return f"bid:scheduled:{workflow_id}"
