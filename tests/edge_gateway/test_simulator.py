"""The simulator core, driven in-process as the control loop would: commands, acks, faults, determinism."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from assets.generator import Site, generate_fleet
from edge_gateway.simulator import (
    BACKFILL_PER_STEP,
    BACKLOG_LIMIT,
    DELAY_S,
    FaultMix,
    Faults,
    FleetSimulator,
    SimulatedSite,
)
from schemas import packaged_codec

START = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)


def _sites(n: int = 20) -> list[Site]:
    return list(generate_fleet(START, n, seed=3).sites.values())


def _run(site: SimulatedSite, seconds: int, start: datetime = START) -> list[dict[str, Any]]:
    return [r for t in range(1, seconds + 1) for r in site.step(1.0, start + timedelta(seconds=t))]


def _command(site: Site, setpoint_kw: float, valid_from: datetime, valid_until: datetime) -> dict[str, Any]:
    return {"command_id": "cmd-1", "dispatch_id": "d-1", "site_id": site.site_id, "setpoint_kw": setpoint_kw,
            "valid_from": valid_from, "valid_until": valid_until, "attempt": 1, "issued_at": valid_from}


def test_telemetry_is_valid_site_telemetry_with_increasing_seq() -> None:
    site = SimulatedSite(_sites(1)[0], Faults(), seed=1, start=START)
    records = _run(site, 5)
    codec = packaged_codec()
    assert [r["seq"] for r in records] == [1, 2, 3, 4, 5]
    for record in records:
        assert codec.decode(codec.encode("SiteTelemetry", record)) == record
        balance = record["load_kw"] - record["solar_kw"] - record["battery_kw"]
        assert record["grid_kw"] == pytest.approx(balance, abs=1e-3)


def test_a_valid_command_is_accepted_and_followed_within_its_window_only() -> None:
    spec = _sites(1)[0]
    site = SimulatedSite(spec, Faults(), seed=1, start=START)
    site.soc_pct = 80.0
    begin, end = START + timedelta(seconds=3), START + timedelta(seconds=6)
    ack = site.apply_command(_command(spec, 1.0, begin, end), START)
    assert (ack["status"], ack["reason"], ack["site_id"]) == ("ACCEPTED", None, spec.site_id)
    records = _run(site, 8)
    following = [r["seq"] for r in records if r["active_command_id"] == "cmd-1"]
    assert following == [3, 4, 5]
    assert all(r["battery_kw"] == pytest.approx(1.0) and r["mode"] == "DISPATCH" for r in records[2:5])
    assert records[6]["mode"] != "DISPATCH"


@pytest.mark.parametrize(("setpoint", "valid_from", "valid_until", "status"), [
    (1.0, START - timedelta(minutes=5), START - timedelta(seconds=1), "EXPIRED"),
    (1.0, START + timedelta(minutes=5), START + timedelta(minutes=1), "REJECTED"),
    (500.0, START, START + timedelta(minutes=5), "REJECTED"),
    (-500.0, START, START + timedelta(minutes=5), "REJECTED"),
])
def test_expired_inverted_and_out_of_limit_commands_are_refused_with_a_reason(
        setpoint: float, valid_from: datetime, valid_until: datetime, status: str) -> None:
    spec = _sites(1)[0]
    site = SimulatedSite(spec, Faults(), seed=1, start=START)
    ack = site.apply_command(_command(spec, setpoint, valid_from, valid_until), START)
    assert ack["status"] == status and ack["reason"]
    assert site.command is None


def test_a_command_for_another_site_is_rejected() -> None:
    one, other = _sites(2)
    ack = SimulatedSite(one, Faults(), 1, START).apply_command(
        _command(other, 1.0, START, START + timedelta(minutes=1)), START)
    assert ack["status"] == "REJECTED" and other.site_id in ack["reason"]


def test_a_noncompliant_site_acks_but_keeps_to_its_own_plan() -> None:
    spec = _sites(1)[0]
    site = SimulatedSite(spec, Faults(noncompliant=True), seed=1, start=START)
    ack = site.apply_command(_command(spec, 1.0, START, START + timedelta(minutes=1)), START)
    assert ack["status"] == "ACCEPTED"
    assert all(r["active_command_id"] is None for r in _run(site, 5))


def test_offline_sites_send_nothing_and_delayed_sites_send_late_with_their_event_time() -> None:
    offline_spec, delayed_spec = _sites(2)
    offline = SimulatedSite(offline_spec, Faults(offline=True), 1, START)
    delayed = SimulatedSite(delayed_spec, Faults(delayed=True), 1, START)
    assert _run(offline, 60) == []
    early = _run(delayed, int(DELAY_S) - 1)
    assert early == []
    later = [r for t in range(int(DELAY_S), int(DELAY_S) + 5)
             for r in delayed.step(1.0, START + timedelta(seconds=t))]
    assert later and all(r["event_time"] <= START + timedelta(seconds=5) for r in later)


def test_flapping_sites_go_offline_and_come_back() -> None:
    site = SimulatedSite(_sites(1)[0], Faults(flapping=True), 1, START)
    states = {site.online(START + timedelta(seconds=s)) for s in range(0, 400, 5)}
    assert states == {True, False}


def test_faults_go_to_exact_fractions_and_the_same_seed_gives_the_same_fleet() -> None:
    sites = _sites(20)
    mix = FaultMix(offline=0.1, flapping=0.2, delayed=0.25, noncompliant=0.5, corrupt=0.05)
    faults = mix.assign((s.site_id for s in sites), seed=9)
    assert sum(f.offline for f in faults.values()) == 2
    assert sum(f.flapping for f in faults.values()) == 4
    assert sum(f.delayed for f in faults.values()) == 5
    assert sum(f.noncompliant for f in faults.values()) == 10
    assert sum(f.corrupt for f in faults.values()) == 1

    def trace() -> list[dict[str, Any]]:
        fleet = FleetSimulator(sites, seed=9, start=START, faults=mix)
        return [r for t in range(1, 40) for r in fleet.step(1.0, START + timedelta(seconds=t))]

    assert trace() == trace()


def test_the_fleet_routes_commands_and_prices_and_offline_sites_do_not_answer() -> None:
    sites = _sites(4)
    fleet = FleetSimulator(sites, seed=2, start=START, faults=FaultMix(offline=0.25))
    offline = next(s for s in fleet.sites.values() if s.faults.offline)
    online = next(s for s in fleet.sites.values() if not s.faults.offline)
    window = (START, START + timedelta(minutes=1))
    assert fleet.apply_command(_command(offline.site, 1.0, *window), START) is None
    assert fleet.apply_command({**_command(online.site, 1.0, *window), "site_id": "nowhere"}, START) is None
    ack = fleet.apply_command(_command(online.site, 1.0, *window), START)
    assert ack is not None and ack["status"] == "ACCEPTED"
    region = online.site.region
    forecast = {"region": region, "issued_at": START, "start": START, "interval_minutes": 30,
                "prices_per_mwh": [40.0, 90.0, 60.0, 150.0], "currency": "EUR"}
    plans = fleet.receive_prices(forecast, START)
    in_region = {s.site_id for s in fleet.sites.values() if s.site.region == region and not s.faults.offline}
    assert {p["site_id"] for p in plans} == in_region
    codec = packaged_codec()
    for plan in plans:
        codec.encode("SitePlan", plan)
        assert plan["power_kw"][0] < 0 < plan["power_kw"][3]  # charge when cheap, discharge when dear


def test_sites_plan_with_the_site_planner_within_limits_and_reserve() -> None:
    """The plans the simulated devices send pass the platform's plan check from their SoC (issue 16)."""
    import math

    from siteplan.aggregate import Plan, SiteLimits, check_plan

    fleet = FleetSimulator(_sites(20), seed=4, start=START)
    for site in fleet.sites.values():
        site.soc_pct = site.spec.reserve_pct + 5.0  # little energy above reserve: a blind plan breaks it
    steps = 96
    prices = [80.0 + 60.0 * math.sin(2 * math.pi * k / steps) for k in range(steps)]
    regions = {s.site.region for s in fleet.sites.values()}
    for region in regions:
        forecast = {"region": region, "issued_at": START, "start": START, "interval_minutes": 15,
                    "prices_per_mwh": prices, "currency": "EUR"}
        for record in fleet.receive_prices(forecast, START):
            site = fleet.sites[record["site_id"]]
            limits = SiteLimits(site.spec.capacity_kwh, site.spec.max_charge_kw, site.spec.max_discharge_kw,
                                site.spec.reserve_pct, site.spec.round_trip_efficiency)
            assert len(record["power_kw"]) == steps
            assert check_plan(Plan.from_record(record), limits, site.soc_pct) is None


def test_a_storm_watch_reaching_sites_makes_their_plans_fill_the_battery_before_it_begins() -> None:
    import math

    from siteplan.planner import StormWatch, replay_energy

    fleet = FleetSimulator(_sites(6), seed=5, start=START)
    watch = StormWatch(START + timedelta(hours=12), START + timedelta(hours=18))
    fleet.raise_storm_watch(fleet.sites, watch)
    prices = [300.0 if k < 48 else 20.0 for k in range(96)]  # dear until noon: only the storm makes it charge
    for region in {s.site.region for s in fleet.sites.values()}:
        forecast = {"region": region, "issued_at": START, "start": START, "interval_minutes": 15,
                    "prices_per_mwh": prices, "currency": "EUR"}
        for record in fleet.receive_prices(forecast, START):
            spec = fleet.sites[record["site_id"]].spec
            start_kwh = fleet.sites[record["site_id"]].soc_pct / 100 * spec.capacity_kwh
            energy = replay_energy(record["power_kw"], start_kwh, math.sqrt(spec.round_trip_efficiency))
            assert min(energy[48:73]) >= spec.capacity_kwh - 1e-3  # full 12:00 to 18:00


def test_a_storm_watch_record_makes_the_named_sites_plan_again_at_once_and_a_clear_lifts_it() -> None:
    import math

    from siteplan.planner import replay_energy

    fleet = FleetSimulator(_sites(6), seed=5, start=START)
    prices = [300.0 if k < 48 else 20.0 for k in range(96)]  # dear until noon: only a storm makes it charge
    for region in {s.site.region for s in fleet.sites.values()}:
        fleet.receive_prices({"region": region, "issued_at": START, "start": START, "interval_minutes": 15,
                              "prices_per_mwh": prices, "currency": "EUR"}, START)
    named = sorted(fleet.sites)[:2]
    watch = {"node_id": "feeder-x", "action": "RAISE", "starts": START + timedelta(hours=12),
             "until": START + timedelta(hours=18), "site_ids": [*named, "site-not-here"], "raised_by": "t",
             "event_time": START}
    now = START + timedelta(seconds=5)
    plans = fleet.receive_storm(watch, now)
    assert sorted(p["site_id"] for p in plans) == named
    for record in plans:
        site = fleet.sites[record["site_id"]]
        assert site.storm is not None and record["plan_id"].endswith(str(round(now.timestamp() * 1000)))
        start_kwh = site.soc_pct / 100 * site.spec.capacity_kwh
        energy = replay_energy(record["power_kw"], start_kwh, math.sqrt(site.spec.round_trip_efficiency))
        assert min(energy[48:73]) >= site.spec.capacity_kwh - 1e-3  # full 12:00 to 18:00
    assert all(fleet.sites[s].storm is None for s in sorted(fleet.sites)[2:])
    cleared = fleet.receive_storm({**watch, "action": "CLEAR"}, now + timedelta(seconds=1))
    assert len(cleared) == 2 and all(fleet.sites[s].storm is None for s in named)


def test_a_cut_off_site_keeps_its_readings_and_uploads_them_oldest_first_at_a_bounded_rate() -> None:
    site = SimulatedSite(_sites(1)[0], Faults(), seed=1, start=START)
    assert [r["seq"] for r in _run(site, 3)] == [1, 2, 3]
    site.disconnected = True
    assert _run(site, 20, START + timedelta(seconds=3)) == [], "nothing gets out while cut off"
    assert [r["seq"] for r in site.backlog] == list(range(4, 24))
    site.disconnected = False
    steps = [[r["seq"] for r in site.step(1.0, START + timedelta(seconds=24 + k))] for k in range(6)]
    # Each step: the live reading, then at most BACKFILL_PER_STEP kept ones, oldest first.
    assert all(len(step) <= 1 + BACKFILL_PER_STEP for step in steps)
    assert sorted(seq for step in steps for seq in step) == list(range(4, 30)), "none lost, none twice"
    assert steps[0][1:] == [4, 5, 6, 7] and site.backlog == []


def test_readings_handed_back_are_re_sent_once_in_order_and_the_backlog_is_bounded() -> None:
    site = SimulatedSite(_sites(1)[0], Faults(), seed=1, start=START)
    sent = _run(site, 5)
    site.hold(sent[2:])  # their delivery was never confirmed
    site.hold(sent[3:])  # handed back twice: kept once
    assert [r["seq"] for r in site.backlog] == [3, 4, 5]
    site.hold({**sent[0], "seq": seq} for seq in range(100, 100 + BACKLOG_LIMIT))
    assert len(site.backlog) == BACKLOG_LIMIT and site.backlog_dropped == 3
    assert site.backlog[0]["seq"] == 100, "the oldest are dropped first"


def test_a_site_not_started_yet_sends_and_journals_nothing_then_reports_from_its_start() -> None:
    """The WebSocket transport starts each site at its first connection: no reading from before it."""
    site = SimulatedSite(_sites(1)[0], Faults(), seed=1, start=START)
    site.journal = {}
    site.started = False
    assert _run(site, 3) == [] and site.journal == {} and site.backlog == []
    site.started = True
    assert [r["seq"] for r in _run(site, 2, START + timedelta(seconds=3))] == [4, 5]
    assert sorted(seq for _, seq in site.journal) == [4, 5]
