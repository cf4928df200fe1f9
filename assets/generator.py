"""A deterministic fleet generator: realistic sites in all three hierarchies.

The same ``(n_sites, seed)`` always gives the same fleet, so tests, benchmarks
and the simulator agree on it. Sizes follow common home-battery products;
charge/discharge power scales with the battery; reserves, solar and tariffs
vary per site; about 70 % of sites join one program and some join two.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime

from assets.registry import Node, Registry
from core.hierarchy import ELECTRICAL, GEOGRAPHIC

#: (usable kWh, continuous kW) of common home batteries.
BATTERY_PRODUCTS = ((5.0, 3.0), (10.0, 5.0), (13.5, 5.0), (16.0, 8.0), (20.0, 10.0))
TARIFFS = ("flat", "time-of-use", "dynamic", "ev-night")
#: Region name, state name, and the (lat, lon) centre sites scatter around.
REGIONS = (("North", "Northland", (53.4, -2.2)), ("South", "Southshire", (51.5, -0.1)),
           ("East", "Eastmark", (52.6, 1.3)), ("West", "Westvale", (51.45, -2.6)))
SITES_PER_FEEDER = 150
FEEDERS_PER_SUBSTATION = 8
SITES_PER_POSTCODE = 120
POSTCODES_PER_COUNTY = 25


@dataclass(frozen=True)
class Site:
    """A home with a battery (and maybe solar); powers in kW, energy in kWh."""

    site_id: str
    customer_id: str
    lat: float
    lon: float
    capacity_kwh: float
    max_charge_kw: float
    max_discharge_kw: float
    reserve_pct: float
    solar_kwp: float
    tariff: str
    region: str


@dataclass(frozen=True)
class Fleet:
    """A generated fleet: site records and the registry holding its hierarchies."""

    sites: dict[str, Site]
    registry: Registry


def _region_count(n_sites: int) -> int:
    return max(1, min(len(REGIONS), n_sites // 2500 + 1))


def generate_fleet(at: datetime, n_sites: int = 1000, seed: int = 0, programs: int = 3) -> Fleet:
    """Make ``n_sites`` sites under regions, substations, feeders, states, counties, postcodes."""
    if n_sites < 1:
        raise ValueError(f"a fleet needs at least one site, not {n_sites}")
    rng = random.Random(seed)
    reg = Registry()
    n_regions = _region_count(n_sites)
    program_ids = [f"program-{p}" for p in range(programs)]
    for program_id in program_ids:
        reg.add_node(Node(program_id, "program", f"VPP program {program_id[-1]}"), None, at)
    sites: dict[str, Site] = {}
    per_region = [n_sites // n_regions + (1 if r < n_sites % n_regions else 0) for r in range(n_regions)]
    for r, count in enumerate(per_region):
        region_name, state_name, (lat0, lon0) = REGIONS[r]
        region_id, state_id = f"region-{r}", f"state-{r}"
        reg.add_node(Node(region_id, "region", region_name), None, at)
        reg.add_node(Node(state_id, "state", state_name), None, at)
        for i in range(count):
            site_id = f"site-{r}-{i:06d}"
            feeder_no, postcode_no = i // SITES_PER_FEEDER, i // SITES_PER_POSTCODE
            feeder = f"feeder-{r}-{feeder_no}"
            substation = f"substation-{r}-{feeder_no // FEEDERS_PER_SUBSTATION}"
            postcode = f"postcode-{r}-{postcode_no}"
            county = f"county-{r}-{postcode_no // POSTCODES_PER_COUNTY}"
            chain = (
                (substation, "substation", region_id),
                (feeder, "feeder", substation),
                (county, "county", state_id),
                (postcode, "postcode", county),
            )
            for node_id, kind, parent in chain:
                if node_id not in reg.nodes:
                    reg.add_node(Node(node_id, kind, node_id), parent, at)
            enrolled = [p for p in program_ids if rng.random() < 0.35]
            reg.add_site(site_id, {ELECTRICAL: feeder, GEOGRAPHIC: postcode}, enrolled, at)
            capacity, power = rng.choice(BATTERY_PRODUCTS)
            sites[site_id] = Site(
                site_id=site_id,
                customer_id=f"customer-{r}-{i:06d}",
                lat=round(lat0 + rng.uniform(-0.4, 0.4), 5),
                lon=round(lon0 + rng.uniform(-0.6, 0.6), 5),
                capacity_kwh=capacity,
                max_charge_kw=power,
                max_discharge_kw=power,
                reserve_pct=float(rng.choice((10, 15, 20, 20, 25, 30))),
                solar_kwp=round(rng.choice((0.0, 0.0, rng.uniform(2.0, 10.0))), 1),
                tariff=rng.choice(TARIFFS),
                region=region_id,
            )
    return Fleet(sites, reg)
