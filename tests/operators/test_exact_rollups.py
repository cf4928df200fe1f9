"""Exact rollups (issue 20, case 4): node aggregates equal brute force for adversarial plausible readings.

The readings mix the largest and smallest magnitudes plausibility lets through (a site's full
rating, subnormal floats, exact zeros, both signs), arrive out of order and in any batching, and
move through shards and node groups as differences. Brute force ignores all of that: it takes
each site's newest reading, its status and its contribution now, and sums them per node.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from core.plausibility import Rules, SiteLimits, check_telemetry
from operators import twin as v
from operators.ancestry import Ancestry
from schemas.times import epoch_ms, from_epoch_ms
from tests.telemetry import drive
from tests.telemetry.compare import LIVE_FIELDS, mismatches
from tests.telemetry.scenario import MINUTE, Scenario, SiteSpec, ancestry, expected_nodes, nodes_of

START = 1_790_000_000_000 - 1_790_000_000_000 % MINUTE
RULES = Rules()
SUBSTATION_OF = {f: f % 2 for f in range(4)}
SITES = [SiteSpec(f"site-{i}", capacity_kwh=(5.0, 13.5, 10.0)[i % 3], reserve_pct=(0.0, 20.0)[i % 2],
                  max_kw=(3.0, 5.0)[i % 2], feeder=i % 4, postcode=i % 3, programs=(i % 2,))
         for i in range(7)]
#: Which field each fixed-point position of the live aggregate is (counts are compared as counts).
FIELD_OF = {
    v.BATTERY: "battery_kw", v.SOLAR: "solar_kw", v.LOAD: "load_kw", v.GRID: "grid_kw",
    v.ENERGY: "energy_available_kwh", v.HEADROOM: "charge_headroom_kwh",
    v.AVAIL_DISCHARGE: "available_discharge_kw", v.AVAIL_CHARGE: "available_charge_kw",
    v.EST_BATTERY: "est_battery_kw", v.EST_ENERGY: "est_energy_available_kwh",
    v.EST_HEADROOM: "est_charge_headroom_kwh", v.EST_AVAIL_DISCHARGE: "est_available_discharge_kw",
    v.EST_AVAIL_CHARGE: "est_available_charge_kw",
}
COUNT_OF = {v.EXPECTED: "expected_sites", v.REPORTING: "reporting_sites", v.DELAYED_COUNT: "delayed_sites",
            v.OFFLINE_COUNT: "offline_sites"}


def _adversarial(bound: float) -> st.SearchStrategy[float]:
    """Any float in [-bound, bound], weighted towards the awkward ones."""
    extremes = [0.0, -0.0, 5e-324, -5e-324, 2.2250738585072014e-308, 1e-300, 1e-9, -1e-9, bound, -bound,
                bound * (1 - 2**-52), 0.1, 1 / 3]
    return st.one_of(st.sampled_from(extremes), st.floats(-bound, bound, allow_nan=False))


@st.composite
def readings(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Readings of the sites in any order; each passes plausibility against the site's rating."""
    out = []
    for seq in range(draw(st.integers(1, 60))):
        spec = SITES[draw(st.integers(0, len(SITES) - 1))]
        rating = spec.max_kw * RULES.rating_margin
        out.append({
            "site_id": spec.site_id, "seq": seq,
            # Out of order: any time in four minutes, so some sites end DELAYED or OFFLINE.
            "event_time": from_epoch_ms(START + draw(st.integers(0, 240_000))), "received_time": None,
            "soc_pct": draw(st.one_of(st.sampled_from([0.0, 100.0, 5e-324]), st.floats(0.0, 100.0))),
            "battery_kw": draw(_adversarial(rating)),
            "solar_kw": abs(draw(_adversarial(RULES.max_site_kw))),
            "load_kw": abs(draw(_adversarial(RULES.max_site_kw))),
            "grid_kw": draw(_adversarial(RULES.max_site_kw)),
            "battery_temp_c": 25.0, "mode": "SELF_CONSUMPTION", "active_command_id": None, "firmware": "1.0",
        })
    return out


def _scenario(records: list[dict[str, Any]], move_ms: int | None) -> Scenario:
    ancestries = [ancestry(s, 1, START, SUBSTATION_OF) for s in SITES]
    if move_ms is not None:  # a site moves feeder mid-stream: its contribution leaves one chain for another
        moved = SITES[0]
        spec = SiteSpec(moved.site_id, moved.capacity_kwh, moved.reserve_pct, moved.max_kw, 3, moved.postcode,
                        moved.programs)
        ancestries.append(ancestry(spec, 2, move_ms, SUBSTATION_OF))
    end = max(epoch_ms(r["event_time"]) for r in records)
    return Scenario(SITES, ancestries, records, [], START, end)


def _brute_force_units(sc: Scenario) -> dict[str, list[int]]:
    """Per node, the sum of its member sites' current contributions, in the vectors' integer units."""
    latest: dict[str, dict[str, Any]] = {}
    for r in sc.readings:
        held = latest.get(r["site_id"])
        if held is None or (r["event_time"], r["seq"]) > (held["event_time"], held["seq"]):
            latest[r["site_id"]] = r
    versions: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for a in sc.ancestries:
        versions[a["site_id"]].append(a)
    sums: dict[str, list[int]] = defaultdict(lambda: [0] * v.VECTOR_SIZE)
    for site_id, vs in versions.items():
        record = latest.get(site_id)
        reading = None if record is None else v.Reading.from_record(record)
        status = v.status_at(sc.end_ms, None if reading is None else reading.event_ms, sc.delayed_after_ms,
                             sc.offline_after_ms)
        limits = Ancestry.from_record(max(vs, key=lambda a: a["version"]))
        vector = v.contribution(reading, status, limits)
        for node, _ in nodes_of(vs, sc.end_ms):
            for i, value in enumerate(vector):
                sums[node][i] += value
    return sums


@settings(max_examples=150, deadline=None)
@given(records=readings(), shards=st.integers(1, 4), groups=st.integers(1, 3), batch=st.integers(1, 25),
       move=st.one_of(st.none(), st.integers(0, 240_000)))
def test_every_node_aggregate_equals_brute_force_exactly(records: list[dict[str, Any]], shards: int,
                                                         groups: int, batch: int, move: int | None) -> None:
    for r in records:
        spec = next(s for s in SITES if s.site_id == r["site_id"])
        plain = {**r, "event_time": epoch_ms(r["event_time"])}
        assert check_telemetry(plain, START + 240_000, RULES, SiteLimits(spec.max_kw, spec.max_kw)) is None
    sc = _scenario(records, None if move is None else START + move)

    results = drive.run(sc, shards=shards, node_groups=groups, batch=batch)

    assert results.rejected == 0
    want = _brute_force_units(sc)
    assert set(results.nodes) == set(want)
    for node, sums in want.items():
        got = results.nodes[node]
        for i, name in FIELD_OF.items():
            assert got[name] == v.from_units(sums[i]), (node, name)  # exactly: no drift, whatever came before
        for i, name in COUNT_OF.items():
            assert got[name] == sums[i], (node, name)
    # And against the reference of the scenario tests, from the raw floats: one unit per site at most.
    assert mismatches(expected_nodes(sc, sc.end_ms), results.nodes, LIVE_FIELDS) == []
    raw = expected_nodes(sc, sc.end_ms)
    for node, fields in raw.items():
        for name in ("battery_kw", "grid_kw", "est_battery_kw"):
            members = results.nodes[node]["expected_sites"]
            assert math.isclose(results.nodes[node][name], fields.get(name, 0.0),
                                abs_tol=members / v.UNITS_PER_KW), (node, name)
