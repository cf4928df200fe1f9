"""Read the live node aggregates the telemetry dataflow keeps in Redis (``node:{id}`` hashes)."""

from __future__ import annotations

import time
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
    #: The pipeline is further behind than a site may be silent: ``coverage`` is 0 (see vouched_coverage).
    stale: bool = False


def is_stale(lag_s: float | None, offline_after_s: float) -> bool:
    """Whether an aggregate is further behind the wall clock than a site may be silent (then OFFLINE)."""
    return lag_s is not None and lag_s > offline_after_s


def vouched_coverage(coverage: float, lag_s: float | None, offline_after_s: float) -> float:
    """The share of expected sites the platform can vouch for now, not as of the aggregate's event time.

    The stored coverage is true at the aggregate's event time. When the pipeline has not moved for
    longer than ``offline_after_s`` (a stopped or stuck telemetry dataflow), nothing has been heard
    from any site for that long as far as the platform knows, which is the twin's own rule for
    OFFLINE: the answer is 0, not the last value (a stopped flow once left ``coverage: 1.0`` in the
    API for minutes). The counts and values stay as of the event time, and the lag says why.
    """
    return 0.0 if is_stale(lag_s, offline_after_s) else coverage


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


def live_nodes(client: redis.Redis, kinds: set[str], offline_after_s: float) -> list[LiveNode]:
    """Every node of the given kinds with a live aggregate, ordered by kind and id.

    Coverage is what can be vouched for when read (:func:`vouched_coverage`).
    """
    now_ms = time.time() * 1000
    nodes = []
    for fields in aggregate_hashes(client).values():
        if fields.get("node_kind") not in kinds:
            continue
        event_ms = int(float(fields["event_time"]))
        lag_s = (now_ms - event_ms) / 1000
        nodes.append(LiveNode(
            node_id=fields["node_id"], kind=fields["node_kind"], expected=int(fields["expected_sites"]),
            reporting=int(fields["reporting_sites"]),
            coverage=vouched_coverage(float(fields["coverage"]), lag_s, offline_after_s),
            battery_kw=float(fields["battery_kw"]), est_battery_kw=float(fields["est_battery_kw"]),
            energy_kwh=float(fields["energy_available_kwh"]),
            est_energy_kwh=float(fields["est_energy_available_kwh"]),
            oldest_s=float(fields["oldest_knowledge_age_s"]),
            as_of=from_epoch_ms(event_ms).strftime("%H:%M:%S"), event_ms=event_ms,
            stale=is_stale(lag_s, offline_after_s),
        ))
    return sorted(nodes, key=lambda n: (n.kind, n.node_id))
