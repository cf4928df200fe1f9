"""``vpp bench plans``: site plans on real shapes, against the central LP in the same run.

Sites get SMARD day-ahead prices (DE, 2018, hourly, each hour held for its four
quarters), SimBench household load profiles (H0-*, scaled to a 0.5 kW mean) and
SimBench PV profiles (PV1-8, scaled to each site's kWp), a summer day; loads
and PV come from different days of the season per site so the fleet is diverse
while every site sees the same prices (one region).

* ``site_plan_ms``: median time of one 96-step site plan, one process.
* ``central_lp_ms_1k``: the central LP over the same 1,000 sites (``central_lp_ms``
  and ``central_lp_sites`` in a quick run, which uses fewer), and
  ``local_central_gap`` the difference between the sum of local optima and it.
* ``aggregate_10k_s``: 10,000 plans aggregated through the real plans dataflow
  on a private stack, from the last one's arrival to the aggregate in Redis, and
  ``plan_freshness_p99_s`` for plans arriving steadily (:mod:`bench.plans_flow`);
  ``aggregate_10k_inprocess_s`` is the baseline: the same 10,000 records taken
  into the plan book and aggregated through three hierarchies in process.
* ``coupled_gap_pct``: one feeder's sites coupled by a limit of 1.1 x their idle
  peak import; the owners' total bill of the co-optimised plans (feeder signal,
  then caps) over the central optimum with the limit, in percent of that
  optimum's absolute value; with the herding figures (peak import idle, as
  planned alone, and coordinated).
"""

from __future__ import annotations

import statistics
import time
from datetime import UTC, datetime

import numpy as np

from bench import plans_flow
from core.config import Settings
from schemas.times import epoch_ms
from siteplan.aggregate import Plan, PlanBook, aggregate
from siteplan.central import plan_fleet
from siteplan.feeder import coordinate
from siteplan.planner import Battery, PlanInputs, Tariff, plan_site
from siteplan.sums import Member, NodeSums, pack
from vpp import dataset_series

STEPS = 96
DAY_OF_YEAR = 172  # 21 June
HOUSE_MEAN_KW = 0.5
TARIFF = Tariff(network_per_mwh=90.0, export_fee_per_mwh=20.0)


def real_sites(n: int, seed: int = 0) -> list[PlanInputs]:
    """``n`` sites on real shapes (see the module docstring)."""
    datasets_dir = Settings().datasets_dir
    prices_hourly = dataset_series.smard(datasets_dir, "DE", 2018).values
    first_hour = DAY_OF_YEAR * 24
    prices = np.repeat(prices_hourly[first_hour:first_hour + 24], 4)
    loads = [dataset_series.simbench(datasets_dir, f"H0-{c}_pload").values for c in "ABCGHL"]
    pvs = [dataset_series.simbench(datasets_dir, f"PV{i}").values for i in range(1, 9)]
    rng = np.random.default_rng(seed)
    sites = []
    for _ in range(n):
        day = DAY_OF_YEAR + int(rng.integers(-30, 30))
        load = loads[int(rng.integers(len(loads)))]
        pv = pvs[int(rng.integers(len(pvs)))]
        window = slice(day * STEPS, (day + 1) * STEPS)
        load_kw = load[window] * HOUSE_MEAN_KW / float(np.mean(load))
        solar_kw = pv[window] / float(np.max(pv)) * float(rng.choice([0.0, 3.0, 5.0, 8.0]))
        capacity = float(rng.choice([5.0, 10.0, 13.5]))
        battery = Battery(capacity, float(rng.choice([3.0, 5.0])), float(rng.choice([3.0, 5.0])),
                          float(rng.choice([10.0, 20.0, 30.0])), float(rng.uniform(30.0, 90.0)))
        sites.append(PlanInputs(battery, prices, np.maximum(load_kw, 0.0), np.maximum(solar_kw, 0.0), TARIFF))
    return sites


def _aggregate_10k(sites: list[PlanInputs]) -> tuple[float, float]:
    """Seconds to take 10,000 SitePlan records into the book and aggregate them; milliseconds for
    node sums kept by differences to take 100 replaced plans among them."""
    start = datetime(2026, 6, 21, tzinfo=UTC)
    shapes = [plan_site(s).power_kw.tolist() for s in sites[:50]]
    records = [{"site_id": f"site-{i}", "plan_id": f"site-{i}-1", "issued_at": start, "start": start,
                "interval_minutes": 15, "power_kw": shapes[i % len(shapes)], "forecast_issued_at": start}
               for i in range(10_000)]
    ancestors = {f"site-{i}": (f"feeder-{i % 40}", f"sub-{i % 8}", f"region-{i % 2}", f"pc-{i % 100}",
                               f"state-{i % 4}", f"program-{i % 3}") for i in range(10_000)}
    online = {s for i, s in enumerate(ancestors) if i % 20}
    started = time.perf_counter()
    book = PlanBook()
    for record in records:
        book.offer(Plan.from_record(record))
    aggregate(book, ancestors, online, epoch_ms(start), STEPS)
    full_s = time.perf_counter() - started

    sums = NodeSums(STEPS, 15, 3_600_000)
    sums.reset(epoch_ms(start))
    now_ms = epoch_ms(start)
    sums.apply({s: Member(pack(book.plans[s]), s in online, nodes) for s, nodes in ancestors.items()}, now_ms)
    changed = list(ancestors)[::100]
    replaced = {s: Member(pack(Plan(s, f"{s}-2", now_ms, now_ms, 15, tuple(shapes[k % len(shapes)]), now_ms)),
                          s in online, ancestors[s]) for k, s in enumerate(changed)}
    started = time.perf_counter()
    sums.apply(replaced, now_ms)
    return full_s, (time.perf_counter() - started) * 1000


def run(quick: bool) -> dict[str, float]:
    """Measure and return the figures."""
    n_central = 200 if quick else 1000
    sites = real_sites(n_central)
    plan_site(sites[0])  # compile once
    timings, local_total = [], 0.0
    for site in sites:
        started = time.perf_counter()
        local_total += plan_site(site).cost
        timings.append((time.perf_counter() - started) * 1000)
    figures: dict[str, float] = {"site_plan_ms": statistics.median(timings),
                                 "site_plan_p99_ms": float(np.percentile(timings, 99))}
    started = time.perf_counter()
    central = plan_fleet(sites)
    figures["central_lp_ms"] = (time.perf_counter() - started) * 1000
    figures["central_lp_sites"] = float(n_central)
    if n_central == 1000:
        figures["central_lp_ms_1k"] = figures["central_lp_ms"]
    figures["local_central_gap"] = abs(local_total - central.cost)
    figures["aggregate_10k_inprocess_s"], figures["aggregate_100_changes_ms"] = _aggregate_10k(sites)
    shapes = [plan_site(s).power_kw.tolist() for s in sites[:20]]
    figures.update(plans_flow.measure(burst=10_000, steady=300 if quick else 2_000, rate=100.0,
                                      shapes=shapes))
    feeder = sites[:30 if quick else 100]
    idle_peak = float(np.max(np.sum([np.maximum(s.load_kw - s.solar_kw, 0.0) for s in feeder], axis=0)))
    limit = 1.1 * idle_peak
    coordinated = coordinate(feeder, limit, rounds=4 if quick else 10)
    coupled = plan_fleet(feeder, limit)
    figures["coupled_gap_pct"] = (coordinated.cost - coupled.cost) / max(abs(coupled.cost), 1e-9) * 100.0
    figures["feeder_idle_peak_kw"] = idle_peak
    figures["feeder_planned_peak_kw"] = float(np.max(coordinated.uncoordinated_import_kw))
    figures["feeder_coordinated_peak_kw"] = float(np.max(coordinated.feeder_import_kw))
    figures["feeder_limit_kw"] = limit
    return figures
