"""The fleet stepped as columns: each site's battery as the per-site physics would run it, limits kept."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from assets.generator import Site, generate_fleet
from edge_gateway.fleet_physics import battery_spec
from edge_gateway.physics import step_battery
from edge_gateway.simulator import Faults, FleetSimulator, SimulatedSite

START = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)
SITES = list(generate_fleet(START, 12, seed=5).sites.values())


def _command(site: Site, setpoint_kw: float, valid_from: datetime,
             valid_until: datetime) -> dict[str, object]:
    return {"command_id": f"cmd-{site.site_id}", "dispatch_id": "d", "site_id": site.site_id,
            "setpoint_kw": setpoint_kw, "valid_from": valid_from, "valid_until": valid_until, "attempt": 1,
            "issued_at": valid_from}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(socs=st.lists(st.floats(0.0, 100.0), min_size=len(SITES), max_size=len(SITES)),
       setpoints=st.lists(st.none() | st.floats(-1.0, 1.0), min_size=len(SITES), max_size=len(SITES)),
       steps=st.lists(st.floats(0.5, 900.0), min_size=1, max_size=8))
def test_each_site_steps_as_the_per_site_battery_would_and_follows_its_setpoint_within_limits(
        socs: list[float], setpoints: list[float | None], steps: list[float]) -> None:
    fleet = FleetSimulator(SITES, seed=1, start=START)
    for site, soc, share in zip(fleet.rows, socs, setpoints, strict=True):
        site.soc_pct = max(soc, site.spec.reserve_pct)
        if share is not None:  # a share of the inverter's limit: always within it
            limit = site.spec.max_discharge_kw if share > 0 else site.spec.max_charge_kw
            order = _command(site.site, share * limit, START, START + timedelta(days=1))
            ack = site.apply_command(order, START)
            assert ack["status"] == "ACCEPTED"
    now = START
    for dt_s in steps:
        before = {site.site_id: site.soc_pct for site in fleet.rows}
        now += timedelta(seconds=dt_s)
        records = {r["site_id"]: r for r in fleet.step(dt_s, now)}
        assert set(records) == set(fleet.sites)
        for site in fleet.rows:
            record = records[site.site_id]
            command = site.command
            if command is not None:  # followed: exactly what the per-site step makes of the setpoint
                spec, soc = battery_spec(site.site), before[site.site_id]
                expected = step_battery(spec, soc, command.setpoint_kw, dt_s)
                assert (site.soc_pct, site.battery_kw) == (expected.soc_pct, expected.battery_kw)
                assert record["mode"] == "DISPATCH" and record["active_command_id"] == command.command_id
            else:
                assert record["mode"] != "DISPATCH" and record["active_command_id"] is None
            assert site.spec.reserve_pct - 1e-9 <= site.soc_pct <= 100.0 + 1e-9
            assert -site.spec.max_charge_kw - 1e-9 <= site.battery_kw <= site.spec.max_discharge_kw + 1e-9
            assert record["soc_pct"] == pytest.approx(site.soc_pct, abs=1e-4)
            assert record["grid_kw"] == pytest.approx(
                record["load_kw"] - record["solar_kw"] - record["battery_kw"], abs=1e-3)


def test_a_slice_of_rows_steps_only_those_sites_and_a_command_ends_with_its_window() -> None:
    fleet = FleetSimulator(SITES, seed=2, start=START)
    first = fleet.rows[0]
    first.soc_pct = 80.0
    first.apply_command(_command(first.site, 0.5, START, START + timedelta(seconds=2)), START)
    records = fleet.step(1.0, START + timedelta(seconds=1), slice(0, 3))
    assert [r["site_id"] for r in records] == [s.site_id for s in fleet.rows[:3]]
    assert [s.seq for s in fleet.rows] == [1, 1, 1] + [0] * (len(SITES) - 3)
    assert records[0]["battery_kw"] == pytest.approx(0.5) and records[0]["mode"] == "DISPATCH"
    later = fleet.step(1.0, START + timedelta(seconds=2), slice(0, 1))
    assert later[0]["mode"] != "DISPATCH" and first.command is None, "expired at valid_until"


def test_a_site_of_its_own_and_the_same_site_in_a_fleet_obey_the_same_battery() -> None:
    alone = SimulatedSite(SITES[0], Faults(), seed=3, start=START)
    member = FleetSimulator(SITES[:1], seed=3, start=START).rows[0]
    assert alone.soc_pct == member.soc_pct, "the same seed gives the same starting state"
    for site in (alone, member):
        site.apply_command(_command(site.site, -1.0, START, START + timedelta(minutes=5)), START)
    a = [r["battery_kw"] for t in range(1, 6) for r in alone.step(1.0, START + timedelta(seconds=t))]
    b = [r["battery_kw"] for t in range(1, 6) for r in member.step(1.0, START + timedelta(seconds=t))]
    assert a == b == [-1.0] * 5
