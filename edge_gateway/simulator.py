"""The fleet simulator's core: sites with batteries, solar and load that obey (or not) commands. No I/O.

Everything here is driven by the caller's clock (``now``) and step length, so
the same objects serve the WebSocket and Kafka transports
(``edge_gateway.sim_transports``) and a control-loop test that steps a fleet
in-process. Randomness comes from one seed: the same seed, sites and calls give
the same telemetry, acks and faults.

Faults are assigned to a fraction of sites each: offline (never reports),
flapping (reports for a while, then drops off), delayed (samples reach the
platform ``DELAY_S`` late, still stamped with their event time),
non-compliant (acknowledges commands but keeps to its own plan) and corrupt
(some frames are mangled on the wire; the transport asks ``corrupts_next_frame``).

Store-and-forward: a site cut off from the network (:meth:`FleetSimulator.disconnect`,
or a transport that cannot reach the gateway and hands its readings back with
:meth:`SimulatedSite.hold`) keeps its readings in a bounded backlog
(``BACKLOG_LIMIT``; beyond it the oldest are dropped and counted) and, once
reachable again, uploads them oldest first beside its live readings, at most
``BACKFILL_PER_STEP`` per step, so an upload never looks like a flood to the
gateway's rate limit. Sequence numbers stay those of the original readings, so
the platform counts a reading sent twice (an upload whose acknowledgement was
lost) once.
"""

from __future__ import annotations

import random
import time
import zlib
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import numpy as np

from assets.generator import Site
from edge_gateway import physics
from edge_gateway.fleet_physics import FIRMWARE, FollowedCommand, SiteArrays, battery_spec
from edge_gateway.wire import instant
from siteplan import planner

__all__ = ["FIRMWARE", "FaultMix", "Faults", "FleetSimulator", "SimClock", "SimulatedSite", "SiteProfile"]

DELAY_S = 30.0
FLAP_ONLINE_S = 120.0
FLAP_OFFLINE_S = 45.0
CORRUPT_FRAME_SHARE = 0.2
#: Readings a cut-off site keeps for later: an hour at one a second.
BACKLOG_LIMIT = 3600
#: Kept readings uploaded per step once the site is reachable again (beside its live reading).
BACKFILL_PER_STEP = 4


@dataclass(frozen=True)
class Faults:
    """Which misbehaviours one site has."""

    offline: bool = False
    flapping: bool = False
    delayed: bool = False
    noncompliant: bool = False
    corrupt: bool = False


@dataclass(frozen=True)
class FaultMix:
    """The fraction of sites given each fault; faults are drawn independently, so a site may have several."""

    offline: float = 0.0
    flapping: float = 0.0
    delayed: float = 0.0
    noncompliant: float = 0.0
    corrupt: float = 0.0

    def assign(self, site_ids: Iterable[str], seed: int) -> dict[str, Faults]:
        """Exactly ``round(fraction * n)`` sites get each fault, chosen by the seed."""
        ids = sorted(site_ids)
        chosen: dict[str, set[str]] = {}
        for name in ("offline", "flapping", "delayed", "noncompliant", "corrupt"):
            fraction = min(1.0, max(0.0, getattr(self, name)))
            chosen[name] = set(random.Random(f"{seed}:{name}").sample(ids, round(fraction * len(ids))))
        return {site: Faults(**{name: site in members for name, members in chosen.items()}) for site in ids}


class SiteProfile(Protocol):
    """A recorded load (and PV) a site replays instead of its synthetic household.

    ``self_consumption`` says what the battery does when no command holds it: run
    the house (cover load minus solar), or stand still, as a program site that
    keeps its energy for the program's events does (``peak`` replays use this, so
    the node's load without the fleet is exactly the recorded one).
    """

    @property
    def self_consumption(self) -> bool:
        """Whether the battery runs the house when no command holds it (else it stands still)."""
        ...

    def load_kw(self, now: datetime) -> float:
        """The household load at ``now``."""
        ...

    def solar_kw(self, now: datetime) -> float:
        """The PV output at ``now``."""
        ...


class SimulatedSite:
    """One home: battery physics, solar with clouds, noisy household load, the command it follows.

    Its physics state is one row of a :class:`SiteArrays` (``soc_pct``, ``battery_kw``, ``seq``,
    ``command`` and ``profile`` read and write that row): the fleet's, so that
    :meth:`FleetSimulator.step` steps every site in one numpy pass, or, for a site made on its
    own, a table of one row. What is per site by nature stays here: faults, delays, the
    store-and-forward backlog, the journal, forecasts and plans.
    """

    #: The storm watch over the site's area, if one is raised: its plans hold a full battery through it.
    storm: planner.StormWatch | None = None

    def __init__(self, site: Site, faults: Faults, seed: int, start: datetime,
                 arrays: SiteArrays | None = None, row: int = 0) -> None:
        """A site of its own, or row ``row`` of a fleet's ``arrays`` (which must list ``site`` there)."""
        self.site = site
        self.faults = faults
        self.spec = battery_spec(site)
        self._rng = random.Random(f"{seed}:{site.site_id}")
        if arrays is None:
            arrays, row = SiteArrays([site], zlib.crc32(f"{seed}:{site.site_id}".encode())), 0
        self._arrays, self._row = arrays, row
        self.soc_pct = self._rng.uniform(max(site.reserve_pct, 30.0), 95.0)
        arrays.cloud[row] = self._rng.uniform(0.4, 1.0)
        self._base_load_kw = arrays.base_load_kw[row] = self._rng.uniform(0.25, 0.7)
        self.forecast: dict[str, Any] | None = None
        self._flap_phase_s = self._rng.uniform(0.0, FLAP_ONLINE_S + FLAP_OFFLINE_S)
        self._start = start
        self._held: deque[tuple[datetime, dict[str, Any]]] = deque()
        self.disconnected = False
        #: Whether the device has begun taking readings: a transport that steps the whole fleet from
        #: one ticker starts each site at its first connection, as a device boots, connects, then
        #: measures (readings from before would arrive after the first live ones, out of order).
        self.started = True
        #: Readings not yet delivered (store-and-forward), in sequence order; at most ``BACKLOG_LIMIT``.
        self.backlog: list[dict[str, Any]] = []
        #: Kept readings dropped because the backlog was full (the oldest go first).
        self.backlog_dropped = 0
        #: If set, every reading the device takes and means to deliver, by (site, seq): what a
        #: reference check compares history with (readings of a device that is down are not in it).
        self.journal: dict[tuple[str, int], dict[str, Any]] | None = None

    @property
    def site_id(self) -> str:
        """The site's id."""
        return self.site.site_id

    @property
    def soc_pct(self) -> float:
        """State of charge now, percent of capacity."""
        return float(self._arrays.soc_pct[self._row])

    @soc_pct.setter
    def soc_pct(self, value: float) -> None:
        self._arrays.soc_pct[self._row] = value

    @property
    def battery_kw(self) -> float:
        """The battery's power in the last step (positive: discharging)."""
        return float(self._arrays.battery_kw[self._row])

    @property
    def seq(self) -> int:
        """The sequence number of the last sample taken (0 before the first)."""
        return int(self._arrays.seq[self._row])

    @property
    def command(self) -> FollowedCommand | None:
        """The command the site holds (followed from its ``valid_from``), if any."""
        return self._arrays.commands[self._row]

    @command.setter
    def command(self, command: FollowedCommand | None) -> None:
        self._arrays.hold_command(self._row, command)

    @property
    def profile(self) -> SiteProfile | None:
        """A recorded load and PV replayed (no noise) instead of the synthetic ones, if given."""
        return self._arrays.profiles.get(self._row)

    @profile.setter
    def profile(self, profile: SiteProfile | None) -> None:
        if profile is None:
            self._arrays.profiles.pop(self._row, None)
        else:
            self._arrays.profiles[self._row] = profile

    def online(self, now: datetime) -> bool:
        """Whether the device is reachable at ``now`` (offline or disconnected never; flapping in cycles)."""
        if self.faults.offline or self.disconnected:
            return False
        if not self.faults.flapping:
            return True
        elapsed = (now - self._start).total_seconds() + self._flap_phase_s
        return elapsed % (FLAP_ONLINE_S + FLAP_OFFLINE_S) < FLAP_ONLINE_S

    def step(self, dt_s: float, now: datetime) -> list[dict[str, Any]]:
        """Advance the physics by ``dt_s`` to ``now``; the SiteTelemetry records to send now (0, 1 or more).

        Physics runs whether or not the device is online. A sample taken while the site is cut off
        (``disconnected``) is kept in the backlog and uploaded, oldest first, a few per step once
        it is back; one taken while offline or flapping off (the device itself is down) is lost. A
        delayed site's samples come out ``DELAY_S`` later.
        """
        row = self._row
        return self.deliver(self._arrays.advance(dt_s, now, slice(row, row + 1))[0], now)

    def deliver(self, sample: dict[str, Any], now: datetime) -> list[dict[str, Any]]:
        """What becomes of the sample just taken at ``now`` (see :meth:`step`); the records to send now."""
        if not self.started:
            return []  # not measuring yet: the sample is nobody's reading
        online = self.online(now)
        due: list[dict[str, Any]]
        if online and not self.faults.delayed and not self._held:
            due = [sample]  # the usual case: out at once
        else:
            due = []
            if online:
                self._held.append((now + timedelta(seconds=DELAY_S if self.faults.delayed else 0.0), sample))
            elif self.disconnected and not self.faults.offline:
                self.hold([sample])
            else:
                sample = {}  # lost: the device itself is down
            while self._held and self._held[0][0] <= now:
                due.append(self._held.popleft()[1])
        if sample and self.journal is not None:
            self.journal[(self.site_id, sample["seq"])] = sample
        if self.backlog and online:
            due.extend(self.backlog[:BACKFILL_PER_STEP])
            del self.backlog[:BACKFILL_PER_STEP]
        return due

    def hold(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Keep readings that did not get through for a later upload (in sequence order, bounded)."""
        fresh = sorted((dict(r) for r in records), key=lambda r: int(r["seq"]))
        if not fresh:
            return
        if not self.backlog or int(fresh[0]["seq"]) > int(self.backlog[-1]["seq"]):
            self.backlog.extend(fresh)  # the usual case: newer than everything kept
        else:
            merged = {int(r["seq"]): r for r in self.backlog}
            merged.update((int(r["seq"]), r) for r in fresh)
            self.backlog = [merged[seq] for seq in sorted(merged)]
        overflow = len(self.backlog) - BACKLOG_LIMIT
        if overflow > 0:
            self.backlog_dropped += overflow
            del self.backlog[:overflow]

    def apply_command(self, command: Mapping[str, Any], now: datetime) -> dict[str, Any]:
        """Take a SiteCommand; the CommandAck record the device answers with."""
        valid_from, valid_until = instant(command["valid_from"]), instant(command["valid_until"])
        setpoint = float(command["setpoint_kw"])
        status, reason = "ACCEPTED", None
        if command["site_id"] != self.site_id:
            status, reason = "REJECTED", f"addressed to {command['site_id']}, this is {self.site_id}"
        elif now >= valid_until:
            status, reason = "EXPIRED", "arrived after valid_until"
        elif valid_until <= valid_from:
            status, reason = "REJECTED", "empty validity window"
        elif not -self.spec.max_charge_kw <= setpoint <= self.spec.max_discharge_kw:
            status, reason = "REJECTED", (f"setpoint {setpoint} kW outside "
                                          f"[-{self.spec.max_charge_kw}, {self.spec.max_discharge_kw}] kW")
        elif not self.faults.noncompliant:
            self.command = FollowedCommand(str(command["command_id"]), setpoint, valid_from, valid_until)
        return {"command_id": command["command_id"], "site_id": self.site_id, "status": status,
                "reason": reason, "event_time": now}

    def receive_prices(self, forecast: Mapping[str, Any], now: datetime) -> dict[str, Any]:
        """Keep a PriceForecast and plan the battery for the owner with the site planner (``siteplan``).

        The device forecasts its own load and solar from its profile (no noise, today's clouds)
        and plans from its state of charge now. Returns the SitePlan record it sends back.
        """
        self.forecast = dict(forecast)
        prices = np.array([float(p) for p in forecast["prices_per_mwh"]])
        start, minutes = instant(forecast["start"]), int(forecast["interval_minutes"])
        hours = [(t.hour + t.minute / 60 + self.site.lon / 15.0) % 24
                 for t in (start + timedelta(minutes=minutes * (k + 0.5)) for k in range(len(prices)))]
        load = np.array([physics.household_load_kw(self._base_load_kw, h, 0.0) for h in hours])
        cloud = float(self._arrays.cloud[self._row])
        solar = np.array([physics.solar_kw(self.site.solar_kwp, h, cloud) for h in hours])
        battery = planner.Battery(self.spec.capacity_kwh, self.spec.max_charge_kw, self.spec.max_discharge_kw,
                                  self.spec.reserve_pct, min(100.0, max(0.0, self.soc_pct)),
                                  self.spec.round_trip_efficiency)
        hold, may_discharge = planner.storm_hold(battery, start, len(prices), self.storm, minutes)
        plan = planner.plan_site(planner.PlanInputs(battery, prices, load, solar, hold_kwh=hold,
                                                    may_discharge=may_discharge, step_minutes=minutes))
        issued = instant(forecast["issued_at"])
        # One id per plan made (a storm watch re-plans from the same forecast: a new plan, not a replay).
        return {"site_id": self.site_id, "plan_id": f"{self.site_id}-{round(now.timestamp() * 1000)}",
                "issued_at": now, "start": start, "interval_minutes": minutes,
                "power_kw": [round(p, 6) for p in plan.power_kw.tolist()], "forecast_issued_at": issued}

    def receive_storm(self, watch: Mapping[str, Any], now: datetime) -> dict[str, Any] | None:
        """A StormWatch reaches the site (a CLEAR, or one already lapsed, lifts it); the plan it makes
        at once from the forecast it holds, or None before its first forecast."""
        until = instant(watch["until"])
        raised = watch["action"] == "RAISE" and until > now
        self.storm = planner.StormWatch(instant(watch["starts"]), until) if raised else None
        return self.receive_prices(self.forecast, now) if self.forecast is not None else None

    def corrupts_next_frame(self) -> bool:
        """Whether the transport should mangle the next frame (corrupt sites, about one frame in five)."""
        return self.faults.corrupt and self._rng.random() < CORRUPT_FRAME_SHARE


class FleetSimulator:
    """Many simulated sites stepped together; what a control-loop test drives in-process."""

    def __init__(self, sites: Iterable[Site], seed: int, start: datetime,
                 faults: FaultMix | None = None) -> None:
        site_list = list(sites)
        assigned = (faults or FaultMix()).assign((s.site_id for s in site_list), seed)
        self.arrays = SiteArrays(site_list, seed)
        #: The sites in row order (the order of ``sites``).
        self.rows = [SimulatedSite(s, assigned[s.site_id], seed, start, self.arrays, row)
                     for row, s in enumerate(site_list)]
        self.sites = {site.site_id: site for site in self.rows}

    def step(self, dt_s: float, now: datetime, rows: slice | None = None) -> list[dict[str, Any]]:
        """Advance every site (or those of ``rows``, in row order); the telemetry records sent at ``now``.

        One vectorised physics pass over the rows, then each site decides what of its sample
        (and of its backlog) goes out, as :meth:`SimulatedSite.step` does for one site.
        """
        part = slice(None) if rows is None else rows
        samples = self.arrays.advance(dt_s, now, part)
        out: list[dict[str, Any]] = []
        for site, sample in zip(self.rows[part], samples, strict=True):
            out.extend(site.deliver(sample, now))
        return out

    def disconnect(self, site_ids: Iterable[str]) -> None:
        """Cut these sites off from now on: they keep running (and following their command) unheard."""
        for site_id in site_ids:
            self.sites[site_id].disconnected = True

    def apply_command(self, command: Mapping[str, Any], now: datetime) -> dict[str, Any] | None:
        """Hand a command to its site; its ack, or None when the site is unknown or offline (no answer)."""
        site = self.sites.get(str(command["site_id"]))
        if site is None or not site.online(now):
            return None
        return site.apply_command(command, now)

    def receive_prices(self, forecast: Mapping[str, Any], now: datetime) -> list[dict[str, Any]]:
        """Give a forecast to every online site of its region; their plans."""
        return [site.receive_prices(forecast, now) for site in self.sites.values()
                if site.site.region == forecast["region"] and site.online(now)]

    def receive_storm(self, watch: Mapping[str, Any], now: datetime) -> list[dict[str, Any]]:
        """Give a StormWatch to the sites of this fleet it names; the plans the online ones make at once."""
        plans = []
        for site_id in watch["site_ids"]:
            site = self.sites.get(site_id)
            if site is not None:
                plan = site.receive_storm(watch, now)
                if plan is not None and site.online(now):
                    plans.append(plan)
        return plans

    def raise_storm_watch(self, site_ids: Iterable[str], watch: planner.StormWatch | None) -> None:
        """A storm watch reaches these sites (None lifts it); their next plans hold a full battery."""
        for site_id in site_ids:
            self.sites[site_id].storm = watch


class SimClock:
    """Simulated time that runs ``speed`` times faster than the wall clock from ``start``."""

    def __init__(self, start: datetime, speed: float = 1.0) -> None:
        self.start = start
        self.speed = speed
        self._origin = time.monotonic()

    def now(self) -> datetime:
        """The simulated time now."""
        return self.start + timedelta(seconds=(time.monotonic() - self._origin) * self.speed)

    def wall_seconds(self, sim_seconds: float) -> float:
        """How long ``sim_seconds`` of simulated time take on the wall clock."""
        return sim_seconds / self.speed
