"""A recorded feeder day spread over simulated sites: the sites add up to the feeder, each keeps its shape."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from assets.generator import generate_fleet
from edge_gateway.simulator import Faults, SimulatedSite
from peak.feeder_day import scale_to_fleet, split_feeder

START = datetime(2026, 12, 1, tzinfo=UTC)
STEP = timedelta(minutes=15)

positive = st.floats(0.05, 10.0, allow_nan=False)


@settings(max_examples=50, deadline=None)
@given(st.integers(4, 24).flatmap(lambda n: st.tuples(
    st.lists(positive, min_size=n, max_size=n),
    st.lists(st.lists(positive, min_size=n, max_size=n), min_size=1, max_size=4),
    st.lists(st.floats(0.0, 1.0), min_size=n, max_size=n),
    st.lists(st.floats(0.0, 8.0), min_size=1, max_size=9))))
def test_the_sites_net_load_adds_up_to_the_feeder_in_every_interval(
        case: tuple[list[float], list[list[float]], list[float], list[float]]) -> None:
    feeder, households, solar, kwps = case
    sites = [(f"s{i}", kwp) for i, kwp in enumerate(kwps)]
    shapes = [np.array(h) for h in households]
    day = split_feeder(START, STEP, np.array(feeder), shapes, np.array(solar), sites)
    net = sum(p.load - p.solar for p in day.sites.values())
    assert np.allclose(net, feeder, rtol=1e-9, atol=1e-9)
    # Each site keeps its household's shape against the others: load / shape is one factor per interval.
    factor = day.sites["s0"].load / np.array(households[0])
    for i, (site_id, kwp) in enumerate(sites):
        profile = day.sites[site_id]
        assert (profile.load >= 0).all()
        assert np.allclose(profile.solar, kwp * np.array(solar))
        assert np.allclose(profile.load / np.array(households[i % len(households)]), factor)


def test_scaling_puts_the_fleet_at_its_share_of_the_peak() -> None:
    day = scale_to_fleet(np.array([0.2, 0.4, 0.3]), fleet_kw=100.0, fleet_share=0.1)
    assert day.max() == pytest.approx(1000.0)
    assert day[0] == pytest.approx(500.0)
    with pytest.raises(ValueError):
        scale_to_fleet(np.zeros(3), 100.0)


def test_bad_profiles_are_refused() -> None:
    with pytest.raises(ValueError, match="intervals"):
        split_feeder(START, STEP, np.ones(4), [np.ones(3)], None, [("s", 0.0)])
    with pytest.raises(ValueError, match="positive"):
        split_feeder(START, STEP, np.ones(4), [np.zeros(4)], None, [("s", 0.0)])


def test_a_site_replays_its_profile_and_its_battery_idles_until_commanded() -> None:
    site = next(iter(generate_fleet(START, 1, seed=2).sites.values()))
    day = split_feeder(START, STEP, np.array([3.0, 5.0]), [np.ones(2)], np.array([0.0, 0.5]),
                       [(site.site_id, 2.0)])
    simulated = SimulatedSite(site, Faults(), seed=1, start=START)
    simulated.profile = day.sites[site.site_id]
    first = simulated.step(60.0, START + timedelta(minutes=5))[0]
    second = simulated.step(60.0, START + timedelta(minutes=20))[0]
    assert (first["load_kw"], first["solar_kw"], first["battery_kw"]) == (3.0, 0.0, 0.0)
    assert (second["load_kw"], second["solar_kw"], second["battery_kw"]) == (6.0, 1.0, 0.0)
    assert second["grid_kw"] == pytest.approx(5.0), "the node sees the recorded feeder"
    ack = simulated.apply_command({"command_id": "d/s/1", "site_id": site.site_id, "setpoint_kw": 1.5,
                                   "valid_from": START, "valid_until": START + timedelta(hours=1)},
                                  START + timedelta(minutes=21))
    assert ack["status"] == "ACCEPTED"
    commanded = simulated.step(60.0, START + timedelta(minutes=22))[0]
    assert commanded["battery_kw"] == pytest.approx(1.5)
    assert commanded["grid_kw"] == pytest.approx(6.0 - 1.0 - 1.5)
