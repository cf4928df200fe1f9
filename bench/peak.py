"""``vpp bench peak``: the plan-level year replay of two SimBench feeders.

Each feeder's 2016 load profile (``lv_urban6_pload``, ``mv_urban_pload``; 15
minutes, per unit; fetched and pinned by ``vpp datasets fetch``) gets a fleet of
10% of its annual peak for 2 hours. Every day is forecast from the days before it
only (Holt-Winters refit weekly, the seasonal naive while there are under two
weeks of history, nothing in the first week), planned by the peak LP on the
forecast's median, and executed against the actual load by the threshold-follower
(:mod:`peak.replay`). The same run measures a fixed 17:00-19:00 window with
immediate recharge and the perfect-foresight LP.

Figures: the average over both feeders' months of the monthly peak reduction
(``monthly_peak_reduction_pct``) and of the perfect-foresight one
(``perfect_foresight_reduction_pct``), the days whose peak the fleet raised
(``rebound_days``), the median and worst LP solve per feeder-day
(``plan_s_per_day``, ``plan_s_max``), the months worse than no fleet, and per
feeder. The per-month table goes to ``bench/results/peak-months.json``.
The same plans executed without the billing floor (each day's threshold alone, the
"forecast-and-threshold rule") are ``daily_threshold_only_reduction_pct``.

The full run also runs one recorded feeder day closed loop through the real
stack on a private local stack (:mod:`bench.peak_loop`: simulated fleet,
telemetry and control dataflows, ``node_minute``): ``closed_loop_gap_pct`` is
how far the peak reduction measured from ``node_minute`` falls from the plan's,
in percentage points, with the planned and achieved reductions, the rebound
flag and the simulated speed beside it (:data:`LOOP_SCENARIO`: the evening and
night of 9 December 2016 on ``lv_urban6``, 60 times real time, about eight
minutes). ``--quick`` replays the first 90 days and leaves the closed loop out.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench import peak_loop
from bench.local import private_stack
from core.config import Settings
from forecast.models import HoltWinters, OrNaive, SeasonalNaive
from forecast.series import DAY, Series
from peak.planner import NoEvent
from peak.replay import YearResult, fleet_for, replay_year
from vpp import dataset_series

RESULTS_DIR = Path(__file__).parent / "results"
FEEDERS = ("lv_urban6_pload", "mv_urban_pload")
QUICK_DAYS = 90
QUANTILE = 0.5
#: The closed-loop day of the full run: the evening peak and the whole night's recharge.
LOOP_SCENARIO = peak_loop.LoopScenario(from_hour=16.5, to_hour=24.0, speed=60.0)


def replay(column: str, days: int | None = None, console: Console | None = None,
           billing_floor: bool = True) -> YearResult:
    """One feeder's replay (the first ``days`` days, or the whole year)."""
    series = dataset_series.simbench(Settings().datasets_dir, column)
    if days is not None:
        series = Series(series.start, series.step, series.values[:days * series.per(DAY)],
                        series.name, series.tz)
    model = OrNaive(HoltWinters(), SeasonalNaive())
    progress = console.log if console else (lambda _: None)
    return replay_year(series, model, fleet_for(series), quantile=QUANTILE, billing_floor=billing_floor,
                       progress=progress)


def month_table(result: YearResult) -> Table:
    """Per month: reduction against nothing for the planned fleet, the fixed window, perfect foresight."""
    table = Table(title=f"{result.series}: monthly peak reduction, % of the peak without the fleet")
    for column in ("month", "days", "events", "planned fleet", "fixed window", "perfect foresight",
                   "% of perfect"):
        table.add_column(column, justify="right")
    for m in result.months:
        share = 100 * m.vpp_pct / m.perfect_pct if m.perfect_pct > 0 else float("nan")
        table.add_row(str(m.month), str(m.days), str(m.events), f"{m.vpp_pct:.2f}", f"{m.window_pct:.2f}",
                      f"{m.perfect_pct:.2f}", f"{share:.0f}")
    return table


def _months_json(result: YearResult) -> list[dict[str, float]]:
    return [{"month": m.month, "days": m.days, "events": m.events, "vpp_pct": m.vpp_pct,
             "fixed_window_pct": m.window_pct, "perfect_foresight_pct": m.perfect_pct} for m in result.months]


def run(quick: bool, console: Console | None = None) -> dict[str, float]:
    """The figures of ``vpp bench peak`` (see the module docstring)."""
    console = console or Console(stderr=True)
    days = QUICK_DAYS if quick else None
    results = [replay(column, days, console) for column in FEEDERS]
    months = [m for r in results for m in r.months]
    daily = [m for column in FEEDERS for m in replay(column, days, None, billing_floor=False).months]
    solves = [s for r in results for s in r.plan_s]
    figures: dict[str, float] = {
        "monthly_peak_reduction_pct": statistics.fmean(m.vpp_pct for m in months),
        "perfect_foresight_reduction_pct": statistics.fmean(m.perfect_pct for m in months),
        "fixed_window_reduction_pct": statistics.fmean(m.window_pct for m in months),
        "daily_threshold_only_reduction_pct": statistics.fmean(m.vpp_pct for m in daily),
        "rebound_days": float(sum(r.rebound_days for r in results)),
        "fixed_window_rebound_days": float(sum(r.window_rebound_days for r in results)),
        "months_worse_than_nothing": float(sum(m.vpp_pct < -1e-9 for m in months)),
        "fixed_window_months_worse": float(sum(m.window_pct < -1e-9 for m in months)),
        "plan_s_per_day": statistics.median(solves),
        "plan_s_max": max(solves),
        "forecast_s_per_day": statistics.median(s for r in results for s in r.forecast_s),
        "days_without_event": float(sum(isinstance(d.plan, NoEvent) for r in results for d in r.days)),
    }
    figures["pct_of_perfect_foresight"] = (100 * figures["monthly_peak_reduction_pct"]
                                           / figures["perfect_foresight_reduction_pct"])
    for r in results:
        key = r.series.removeprefix("simbench:").removesuffix("_pload")
        figures[f"{key}_reduction_pct"] = statistics.fmean(m.vpp_pct for m in r.months)
        figures[f"{key}_perfect_pct"] = statistics.fmean(m.perfect_pct for m in r.months)
        figures[f"{key}_fixed_window_pct"] = statistics.fmean(m.window_pct for m in r.months)
        console.print(month_table(r))
    if not quick:
        with private_stack("vpp-bench-peak-loop-") as settings:
            loop = peak_loop.run(settings, LOOP_SCENARIO)
        figures |= loop.figures() | {"closed_loop_speed": LOOP_SCENARIO.speed}
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "peak-months.json").write_text(json.dumps(
        {r.series: _months_json(r) for r in results} | {"quick": quick}, indent=2) + "\n")
    return figures
