"""The fleet generator is deterministic and makes well-formed, varied fleets."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from assets.generator import generate_fleet
from core.hierarchy import ELECTRICAL, GEOGRAPHIC, PROGRAM

AT = datetime(2026, 1, 1, tzinfo=UTC)


def test_same_seed_same_fleet_other_seed_other_fleet() -> None:
    first, again = generate_fleet(AT, 1000, seed=7), generate_fleet(AT, 1000, seed=7)
    assert first.sites == again.sites
    assert first.registry.edges == again.registry.edges
    assert generate_fleet(AT, 1000, seed=8).sites != first.sites


def test_every_site_sits_in_each_hierarchy_exactly_once() -> None:
    fleet = generate_fleet(AT)
    reg = fleet.registry
    assert len(fleet.sites) == 1000
    roots = [n for n, node in reg.nodes.items() if node.kind in ("region", "state")]
    assert sum(len(reg.members(root, AT)) for root in roots) == 2 * 1000
    enrolled = 0
    for site_id, site in fleet.sites.items():
        chain = reg.ancestors(site_id, AT)
        assert [reg.nodes[n].kind for n in chain[ELECTRICAL]] == ["feeder", "substation", "region"]
        assert [reg.nodes[n].kind for n in chain[GEOGRAPHIC]] == ["postcode", "county", "state"]
        assert chain[ELECTRICAL][-1] == site.region
        enrolled += bool(chain[PROGRAM])
        assert 0 < site.reserve_pct < 100
        assert site.max_discharge_kw <= site.capacity_kwh
    assert 0.5 < enrolled / 1000 < 0.9
    assert len({s.capacity_kwh for s in fleet.sites.values()}) >= 4


def test_an_empty_fleet_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one site"):
        generate_fleet(AT, 0)
