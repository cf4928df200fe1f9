"""A generated telemetry scenario with the awkward parts of a real fleet, and its brute-force answer.

The scenario: a few hundred sites in three hierarchies (some in two programs),
readings every second, a feeder re-parented to another substation and a site
moved to another feeder mid-stream (published as new SiteAncestry versions),
out-of-order and duplicated readings, readings so late their minute has closed,
and sites that go silent (some long enough to be OFFLINE, some only DELAYED).

:func:`expected_nodes` and :func:`expected_minutes` compute what the dataflow
must produce by scanning the whole input, with none of the dataflow's
machinery (no deltas, no shards, no windows state).
"""

from __future__ import annotations

import math
import random
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from schemas.times import from_epoch_ms

MINUTE = 60_000


@dataclass(frozen=True)
class SiteSpec:
    site_id: str
    capacity_kwh: float
    reserve_pct: float
    max_kw: float
    feeder: int
    postcode: int
    programs: tuple[int, ...]


@dataclass
class Scenario:
    """Input in production order, plus what the reference needs to know about it."""

    sites: list[SiteSpec]
    ancestries: list[dict[str, Any]]
    readings: list[dict[str, Any]]
    #: Readings produced last, for minutes closed long before they arrive.
    too_late: list[dict[str, Any]]
    start_ms: int
    end_ms: int
    delayed_after_ms: int = 5_000
    offline_after_ms: int = 60_000
    lateness_ms: int = 30_000
    dead: list[bytes] = field(default_factory=list)


def _paths(spec: SiteSpec, substation_of: dict[int, int], valid_from: datetime) -> list[dict[str, Any]]:
    substation = substation_of[spec.feeder]
    paths = [
        {"hierarchy": "electrical", "node_ids": [f"feeder-{spec.feeder}", f"substation-{substation}",
                                                 f"region-{substation % 2}"],
         "valid_from": valid_from, "valid_to": None},
        {"hierarchy": "geographic", "node_ids": [f"postcode-{spec.postcode}", f"county-{spec.postcode % 3}",
                                                 "state-0"],
         "valid_from": valid_from, "valid_to": None},
    ]
    paths += [{"hierarchy": "program", "node_ids": [f"program-{p}"], "valid_from": valid_from,
               "valid_to": None} for p in spec.programs]
    return paths


def ancestry(spec: SiteSpec, version: int, effective_ms: int,
             substation_of: dict[int, int]) -> dict[str, Any]:
    """A SiteAncestry value for ``spec`` with chains valid from ``effective_ms``."""
    effective = from_epoch_ms(effective_ms)
    return {
        "site_id": spec.site_id, "version": version, "event_time": effective, "effective_from": effective,
        "retired": False, "capacity_kwh": spec.capacity_kwh, "max_charge_kw": spec.max_kw,
        "max_discharge_kw": spec.max_kw, "reserve_pct": spec.reserve_pct, "solar_kwp": 4.0,
        "customer_id": None, "region": f"region-{substation_of[spec.feeder] % 2}", "tariff": None,
        "paths": _paths(spec, substation_of, effective),
    }


def recent_start_ms(minutes: float) -> int:
    """A start for a scenario of ``minutes`` that ends just before the wall clock now.

    The real dataflow refuses event times too far from its wall clock (core.plausibility), so a
    scenario run through it must be recent; pure tests may use any start.
    """
    now = time.time_ns() // 1_000_000
    return now - now % MINUTE - (math.ceil(minutes) + 1) * MINUTE


def generate(n_sites: int = 300, minutes: float = 6.5, seed: int = 7,
             start_ms: int | None = None) -> Scenario:
    """A deterministic scenario; ``end_ms`` falls mid-minute so window closes are unambiguous.

    ``start_ms`` (a minute start) defaults to a fixed time; see :func:`recent_start_ms`.
    """
    rng = random.Random(seed)
    if start_ms is None:
        start_ms = 1_790_000_000_000 - 1_790_000_000_000 % MINUTE
    assert start_ms % MINUTE == 0, "scenarios start on a minute"
    seconds = int(minutes * 60)
    end_ms = start_ms + (seconds - 1) * 1000
    substation_of = {f: f % 4 for f in range(12)}
    sites = [
        SiteSpec(f"site-{i:04d}", rng.choice([5.0, 10.0, 13.5]), rng.choice([10.0, 20.0, 30.0]),
                 rng.choice([3.0, 5.0]), rng.randrange(12), rng.randrange(20),
                 (i % 3,) if i % 7 else (i % 3, (i + 1) % 3))
        for i in range(n_sites)
    ]
    ancestries = [ancestry(s, 1, start_ms, substation_of) for s in sites]
    # Mid-stream: feeder-0 moves to substation-3 (its sites follow), and one site moves to feeder-5.
    move_ms = start_ms + 150_000
    moved_sub = dict(substation_of)
    moved_sub[0] = 3
    changes = [ancestry(s, 2, move_ms, moved_sub) for s in sites if s.feeder == 0]
    mover = next(s for s in sites if s.feeder not in (0, 5))
    moved = SiteSpec(mover.site_id, mover.capacity_kwh, mover.reserve_pct, mover.max_kw, 5, mover.postcode,
                     mover.programs)
    changes.append(ancestry(moved, 2, move_ms + 30_000, moved_sub))

    silent_offline = {s.site_id: end_ms - 180_000 for s in rng.sample(sites, n_sites // 20)}
    silent_delayed = {s.site_id: end_ms - 20_000 for s in rng.sample(sites, n_sites // 20)
                      if s.site_id not in silent_offline}
    silent = {**silent_offline, **silent_delayed}
    soc = {s.site_id: rng.uniform(25.0, 95.0) for s in sites}

    produced: list[tuple[float, dict[str, Any]]] = []  # (production order key, reading)
    too_late: list[dict[str, Any]] = []
    late_second = seconds - 240
    for second in range(seconds):
        t = start_ms + second * 1000
        for spec in sites:
            if t > silent.get(spec.site_id, end_ms):
                continue
            battery = rng.uniform(-spec.max_kw, spec.max_kw)
            soc[spec.site_id] = min(100.0, max(spec.reserve_pct, soc[spec.site_id] - battery / 3600 * 10))
            reading = {
                "site_id": spec.site_id, "seq": second, "event_time": from_epoch_ms(t), "received_time": None,
                "soc_pct": soc[spec.site_id], "battery_kw": battery, "solar_kw": rng.uniform(0, 4),
                "load_kw": rng.uniform(0.2, 3), "grid_kw": rng.uniform(-3, 3), "battery_temp_c": 25.0,
                "mode": "SELF_CONSUMPTION", "active_command_id": None, "firmware": "1.0",
            }
            if second == late_second and rng.random() < 0.2:
                too_late.append(reading)
                continue
            # One reading in ten overtakes readings up to three seconds older (out of order).
            order = second - rng.uniform(0.5, 3.0) if rng.random() < 0.1 else float(second)
            produced.append((order, reading))
            if rng.random() < 0.01:
                produced.append((second + 0.5, reading))  # re-delivered
        if second == 150:
            ancestries.extend(changes)  # published while the stream runs
    produced.sort(key=lambda item: item[0])
    readings = [reading for _, reading in produced]
    return Scenario(sites, ancestries, readings, too_late, start_ms, end_ms)


# ---- the brute-force answer ------------------------------------------------------------------


def _in_effect(versions: list[dict[str, Any]], t_ms: int) -> dict[str, Any]:
    ordered = sorted(versions, key=lambda a: a["version"])
    current = ordered[0]
    for a in ordered:
        if a["effective_from"].timestamp() * 1000 <= t_ms:
            current = a
    return current


def nodes_of(versions: list[dict[str, Any]], t_ms: int) -> list[tuple[str, str]]:
    """(node, hierarchy) of every ancestor in effect at ``t_ms``."""
    current = _in_effect(versions, t_ms)
    return [(n, p["hierarchy"]) for p in current["paths"] for n in p["node_ids"]]


def _status(age_ms: int, sc: Scenario) -> str:
    if age_ms >= sc.offline_after_ms:
        return "OFFLINE"
    return "DELAYED" if age_ms >= sc.delayed_after_ms else "ONLINE"


def expected_nodes(sc: Scenario, now_ms: int) -> dict[str, dict[str, float]]:
    """Every node's live aggregate once all input is in, at clock ``now_ms``."""
    latest: dict[str, dict[str, Any]] = {}
    for r in sc.readings + sc.too_late:
        key = (r["event_time"], r["seq"])
        held = latest.get(r["site_id"])
        if held is None or key > (held["event_time"], held["seq"]):
            latest[r["site_id"]] = r
    versions: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for a in sc.ancestries:
        versions[a["site_id"]].append(a)
    nodes: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for site_id, vs in versions.items():
        limits = max(vs, key=lambda a: a["version"])
        reading = latest.get(site_id)
        status = "UNKNOWN" if reading is None else _status(
            now_ms - int(reading["event_time"].timestamp() * 1000), sc)
        for node, _ in nodes_of(vs, now_ms):
            agg = nodes[node]
            agg["expected_sites"] += 1
            agg["delayed_sites"] += status == "DELAYED"
            agg["offline_sites"] += status in ("OFFLINE", "UNKNOWN")
            if reading is None:
                continue
            energy = max(0.0, limits["capacity_kwh"] * (reading["soc_pct"] - limits["reserve_pct"]) / 100)
            headroom = max(0.0, limits["capacity_kwh"] * (100 - reading["soc_pct"]) / 100)
            agg["est_battery_kw"] += reading["battery_kw"]
            agg["est_energy_available_kwh"] += energy
            agg["est_charge_headroom_kwh"] += headroom
            if status == "ONLINE":
                agg["reporting_sites"] += 1
                agg["battery_kw"] += reading["battery_kw"]
                agg["solar_kw"] += reading["solar_kw"]
                agg["load_kw"] += reading["load_kw"]
                agg["grid_kw"] += reading["grid_kw"]
                agg["energy_available_kwh"] += energy
                agg["charge_headroom_kwh"] += headroom
    return {node: dict(agg) for node, agg in nodes.items()}


def closed_minutes(sc: Scenario, now_ms: int) -> list[int]:
    """Minute starts whose end plus the lateness has passed at ``now_ms``."""
    return [m for m in range(sc.start_ms, sc.end_ms, MINUTE) if m + MINUTE + sc.lateness_ms <= now_ms]


def expected_minutes(sc: Scenario, now_ms: int) -> tuple[dict[tuple[str, int], dict[str, float]],
                                                          dict[tuple[str, int], dict[str, float]]]:
    """(site minutes, node minutes) of every closed minute, from the readings that were in time."""
    closed = set(closed_minutes(sc, now_ms))
    per_site: dict[tuple[str, int], dict[int, dict[str, Any]]] = defaultdict(dict)
    for r in sc.readings:  # the too-late readings are left out by definition
        t = int(r["event_time"].timestamp() * 1000)
        minute = t - t % MINUTE
        if minute in closed:
            per_site[(r["site_id"], minute)][r["seq"]] = r  # a re-delivered reading counts once
    versions: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for a in sc.ancestries:
        versions[a["site_id"]].append(a)
    site_rows: dict[tuple[str, int], dict[str, float]] = {}
    for key, by_seq in per_site.items():
        rs = list(by_seq.values())
        last = max(rs, key=lambda r: (r["event_time"], r["seq"]))
        site_rows[key] = {
            "battery_kw_mean": sum(r["battery_kw"] for r in rs) / len(rs),
            "battery_kw_min": min(r["battery_kw"] for r in rs),
            "battery_kw_max": max(r["battery_kw"] for r in rs),
            "solar_kw_mean": sum(r["solar_kw"] for r in rs) / len(rs),
            "soc_pct_last": last["soc_pct"], "samples": len(rs),
        }
    node_rows: dict[tuple[str, int], dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for minute in closed:
        for site_id, vs in versions.items():
            row = site_rows.get((site_id, minute))
            for node, _ in nodes_of(vs, minute):
                agg = node_rows[(node, minute)]
                agg["expected_sites"] += 1
                if row is not None:
                    agg["reporting_sites"] += 1
                    agg["battery_kw"] += row["battery_kw_mean"]
                    agg["battery_kw_min"] += row["battery_kw_min"]
                    agg["battery_kw_max"] += row["battery_kw_max"]
                    agg["solar_kw"] += row["solar_kw_mean"]
    return site_rows, {k: dict(v) for k, v in node_rows.items()}
