"""A generated fleet's plans for the plans dataflow, with the awkward cases, and the brute-force answer.

Plans for 60 sites in three hierarchies: replayed, late (older than the one
held), replacing an earlier one, from a stale forecast, for sites that go
offline (their last plan carried, marked), and implausible ones of every kind
(NaN, beyond the site's limits, below its reserve, an unknown site, issued in
the future). :func:`expected` sums the latest accepted plan of each site per
node and interval with none of the flow's machinery.
"""

from __future__ import annotations

import json
import math
import random
from collections import defaultdict
from typing import Any

from confluent_kafka import Producer

from core.config import Settings
from core.kafka import client_config
from core.topics import ASSETS_CHANGES, PLANS_SITE, TWIN_STATUS
from schemas import packaged_codec
from schemas.times import from_epoch_ms
from tests.telemetry.scenario import SiteSpec, ancestry

MINUTE = 60_000
STEP_MS = 15 * MINUTE
STEPS = 96


def fleet(n: int, rng: random.Random) -> tuple[list[SiteSpec], dict[int, int]]:
    specs = [SiteSpec(f"site-{i:03d}", capacity_kwh=rng.choice([5.0, 10.0, 13.5]), reserve_pct=20.0,
                      max_kw=rng.choice([3.0, 5.0]), feeder=i % 4, postcode=i % 5,
                      programs=(i % 3,) if i % 2 else (0, 1)) for i in range(n)]
    return specs, {0: 0, 1: 0, 2: 1, 3: 1}


def plan(site: SiteSpec, plan_id: str, issued_ms: int, start_ms: int, rng: random.Random,
          forecast_ms: int | None, power: list[float] | None = None) -> dict[str, Any]:
    """A plan that stays within the site's limits and never draws more than it can above its reserve."""
    if power is None:
        amplitude = rng.uniform(0.1, 0.3) * site.max_kw / 8
        phase = rng.uniform(0, 2 * math.pi)
        power = [round(amplitude * math.sin(phase + k * 2 * math.pi / STEPS), 6) for k in range(STEPS)]
    return {"site_id": site.site_id, "plan_id": plan_id, "issued_at": from_epoch_ms(issued_ms),
            "start": from_epoch_ms(start_ms), "interval_minutes": 15, "power_kw": power,
            "forecast_issued_at": None if forecast_ms is None else from_epoch_ms(forecast_ms)}


class Input:
    """What was produced, in order, with the reference's view of it."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes, dict[str, Any], str]] = []  # topic, key, record, schema
        self.accepted: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.statuses: dict[str, list[tuple[int, str]]] = defaultdict(list)
        self.refused: dict[str, str] = {}  # plan_id -> expected error kind

    def ancestry(self, record: dict[str, Any]) -> None:
        self.messages.append((ASSETS_CHANGES, record["site_id"].encode(), record, "SiteAncestry"))

    def plan(self, record: dict[str, Any], refused_as: str | None = None) -> None:
        self.messages.append((PLANS_SITE, record["site_id"].encode(), record, "SitePlan"))
        if refused_as is None:
            self.accepted[record["site_id"]].append(record)
        else:
            self.refused[record["plan_id"]] = refused_as

    def status(self, site_id: str, status: str, at_ms: int) -> None:
        self.messages.append((TWIN_STATUS, site_id.encode(), {
            "site_id": site_id, "status": status, "previous_status": None,
            "event_time": from_epoch_ms(at_ms), "last_seen": from_epoch_ms(at_ms)}, "SiteStatus"))
        self.statuses[site_id].append((at_ms, status))

    def produce(self, settings: Settings, start: int = 0) -> None:
        codec = packaged_codec()
        producer = Producer(client_config(settings, **{"linger.ms": 10}))
        for topic, key, record, schema in self.messages[start:]:
            producer.produce(topic, key=key, value=codec.encode(schema, record))
        producer.flush(30)


def scenario(now_ms: int) -> tuple[list[SiteSpec], Input]:
    rng = random.Random(16)
    specs, substation_of = fleet(60, rng)
    grid = now_ms - now_ms % STEP_MS
    fresh, old = now_ms - 5 * MINUTE, now_ms - 3 * 3_600_000
    data = Input()
    for spec in specs:
        data.ancestry(ancestry(spec, 1, now_ms - 3_600_000, substation_of))
    for i, spec in enumerate(specs[:50]):  # sites 50..59 send no plan: they count in coverage
        start = grid - STEP_MS if i % 3 == 0 else grid  # some plans miss the last interval of the grid
        first = plan(spec, f"{spec.site_id}-a", now_ms - 20 * MINUTE, start, rng,
                      old if i % 7 == 0 else fresh)
        data.plan(first)
        if i % 5 == 0:  # replayed: the very same plan again
            data.plan(first)
        if i % 4 == 0:  # replaced by a newer plan
            data.plan(plan(spec, f"{spec.site_id}-b", now_ms - 10 * MINUTE, grid, rng, fresh))
        if i % 6 == 1:  # a late plan: issued before the one held, arriving after it
            data.plan(plan(spec, f"{spec.site_id}-0", now_ms - 40 * MINUTE, grid, rng, fresh))
    s = specs
    data.plan(plan(s[1], "nan", now_ms - MINUTE, grid, rng, fresh, [math.nan] + [0.0] * (STEPS - 1)),
              "not_a_number")
    data.plan(plan(s[2], "too-strong", now_ms - MINUTE, grid, rng, fresh, [3 * s[2].max_kw] * STEPS),
              "BEYOND_LIMITS")
    drain = [s[3].max_kw] * STEPS  # discharging flat out for a day: far below the reserve
    data.plan(plan(s[3], "below-reserve", now_ms - MINUTE, grid, rng, fresh, drain), "BELOW_RESERVE")
    stranger = SiteSpec("site-unknown", 10.0, 20.0, 5.0, 0, 0, ())
    data.plan(plan(stranger, "stranger", now_ms - MINUTE, grid, rng, fresh), "UNKNOWN_SITE")
    data.plan(plan(s[4], "from-the-future", now_ms + 3_600_000, grid, rng, fresh), "future_event_time")
    for spec in specs[:40:4]:  # offline after planning: the last plan is carried as an estimate
        data.status(spec.site_id, "ONLINE", now_ms - 30 * MINUTE)
        data.status(spec.site_id, "OFFLINE", now_ms - 2 * MINUTE)
    data.status(s[1].site_id, "ONLINE", now_ms - MINUTE)  # came back: planned, not carried
    data.status(s[1].site_id, "OFFLINE", now_ms - 2 * MINUTE)  # an older status arriving later
    return specs, data


def expected(specs: list[SiteSpec], data: Input, start_ms: int,
              stale_before_ms: int) -> dict[str, dict[str, Any]]:
    """Brute force: the latest accepted plan of each site, summed per node and interval."""
    substation_of = {0: 0, 1: 0, 2: 1, 3: 1}
    out: dict[str, dict[str, Any]] = {}
    for spec in specs:
        record = ancestry(spec, 1, 0, substation_of)
        nodes = [n for path in record["paths"] for n in path["node_ids"]]
        plans = data.accepted.get(spec.site_id, [])
        latest = max(plans, key=lambda p: (p["issued_at"], p["plan_id"])) if plans else None
        statuses = sorted(data.statuses.get(spec.site_id, []))
        online = not statuses or statuses[-1][1] != "OFFLINE"
        for node in nodes:
            agg = out.setdefault(node, {"planned": [0.0] * STEPS, "estimate": [0.0] * STEPS,
                                        "planned_n": [0] * STEPS, "carried_n": [0] * STEPS,
                                        "expected": 0, "stale": 0})
            agg["expected"] += 1
            if latest is None:
                continue
            forecast = latest["forecast_issued_at"]
            if forecast is None or forecast.timestamp() * 1000 < stale_before_ms:
                agg["stale"] += 1
            plan_start = int(latest["start"].timestamp() * 1000)
            for k in range(STEPS):
                index = (start_ms + k * STEP_MS - plan_start) // STEP_MS
                if not 0 <= index < len(latest["power_kw"]):
                    continue
                value = latest["power_kw"][index]
                agg["estimate"][k] += value
                if online:
                    agg["planned"][k] += value
                    agg["planned_n"][k] += 1
                else:
                    agg["carried_n"][k] += 1
    return out


def compare(live: dict[str, dict[str, Any]], reference: dict[str, dict[str, Any]]) -> list[str]:
    """What differs between node plan hashes (as Redis holds them) and the brute-force answer."""
    problems = []
    assert set(live) == set(reference), (sorted(live), sorted(reference))
    for node, want in reference.items():
        got = live[node]
        pairs = [("planned_kw", "planned"), ("estimate_kw", "estimate"), ("planned_sites", "planned_n"),
                 ("carried_sites", "carried_n")]
        for field, name in pairs:
            values = json.loads(got[field])
            if any(abs(a - b) > 1e-9 for a, b in zip(values, want[name], strict=True)):
                problems.append(f"{node} {field}: {values[:4]}... != {want[name][:4]}...")
        for field, name in (("expected_sites", "expected"), ("stale_sites", "stale")):
            if int(got[field]) != want[name]:
                problems.append(f"{node} {field}: {got[field]} != {want[name]}")
    return problems


def latest_node_plans(records: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    """Decoded NodePlan records of ``plans.node``, the newest per node, as :func:`compare` reads them."""
    newest: dict[str, dict[str, Any]] = {}
    for record in records:
        held = newest.get(record["node_id"])
        if held is None or record["event_time"] >= held["event_time"]:
            newest[record["node_id"]] = record
    return {node: {"planned_kw": json.dumps(r["planned_kw"]), "estimate_kw": json.dumps(r["estimate_kw"]),
                   "planned_sites": json.dumps(r["planned_sites"]),
                   "carried_sites": json.dumps(r["carried_sites"]),
                   "expected_sites": str(r["expected_sites"]), "stale_sites": str(r["stale_sites"])}
            for node, r in newest.items()}
