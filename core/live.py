"""Read the live node aggregates the telemetry dataflow keeps in Redis (``node:{id}`` hashes)."""

from __future__ import annotations

from dataclasses import dataclass

import redis

from core import keys
from schemas.times import from_epoch_ms


@dataclass(frozen=True)
class LiveNode:
    node_id: str
    kind: str
    expected: int
    reporting: int
    coverage: float
    battery_kw: float
    est_battery_kw: float
    energy_kwh: float
    est_energy_kwh: float
    oldest_s: float
    as_of: str
    #: Event time of the aggregate (epoch ms): the wall clock minus it is the pipeline's lag.
    event_ms: int = 0


def text(value: bytes | str) -> str:
    """A Redis reply as text (the clients here do not decode responses, for speed on the hot paths)."""
    return value.decode() if isinstance(value, bytes) else value


def aggregate_hashes(client: redis.Redis) -> dict[str, dict[str, str]]:
    """Every ``node:{id}`` aggregate hash, by node id (the navigation sets beside them left out)."""
    hashes = {}
    for key in client.scan_iter(f"{keys.NODE_PREFIX}*", count=1000):
        name = text(key)
        if not name.endswith(keys.NAVIGATION_SUFFIXES):
            fields = client.hgetall(name).items()
            hashes[name.removeprefix(keys.NODE_PREFIX)] = {text(k): text(v) for k, v in fields}
    return hashes


def live_nodes(client: redis.Redis, kinds: set[str]) -> list[LiveNode]:
    """Every node of the given kinds with a live aggregate, ordered by kind and id."""
    nodes = []
    for fields in aggregate_hashes(client).values():
        if fields.get("node_kind") not in kinds:
            continue
        event_ms = int(float(fields["event_time"]))
        nodes.append(LiveNode(
            node_id=fields["node_id"], kind=fields["node_kind"], expected=int(fields["expected_sites"]),
            reporting=int(fields["reporting_sites"]), coverage=float(fields["coverage"]),
            battery_kw=float(fields["battery_kw"]), est_battery_kw=float(fields["est_battery_kw"]),
            energy_kwh=float(fields["energy_available_kwh"]),
            est_energy_kwh=float(fields["est_energy_available_kwh"]),
            oldest_s=float(fields["oldest_knowledge_age_s"]),
            as_of=from_epoch_ms(event_ms).strftime("%H:%M:%S"), event_ms=event_ms,
        ))
    return sorted(nodes, key=lambda n: (n.kind, n.node_id))
