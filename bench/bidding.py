"""``vpp bench bidding``: what bids made on forecasts earn on SMARD DE 2018, against perfect foresight.

Set-up (the issue's): a 1 MW / 2 MWh battery, 90% round trip, degradation 1 EUR/MWh of
throughput, week by week over SMARD DE 2018 day-ahead prices at their own (hourly) resolution,
after an 8-week warm-up (the MSTL window). Each week starts at half charge.

- **Bidding on forecasts**: every hour the workflow's decision runs: forecast the next 24
  hours from the prices known so far (the model refits weekly and advances its fit hourly),
  optimise from the actual state of charge (ending the 24 h at half charge), turn the plan
  into a price-quantity curve for the next hour (:func:`bidding.bids.energy_bands`), submit it
  to the :class:`bidding.market.SimulatedMarket` before gate closure; the market clears it at
  the real price. Models: ``naive`` (the price naive) and ``mstl`` (MSTL+AR).
- **Perfect foresight**: one LP over the week's real prices, from half charge back to at least
  half charge: the most any bidder could have earned.

Revenue is net of degradation; energy left above (or below) half charge at the week's end is
credited (debited) at the week's last-day mean price (times the one-way efficiency), so a
policy cannot look better by emptying the battery. The value of perfect information is the
perfect-foresight revenue minus the forecast bidder's. Reserve is left out of the revenue
figures (SMARD has no reserve prices; generated ones would only add a made-up constant);
``optimise_ms`` times a day of 5-minute intervals across energy plus reserve.

The workflow figures (``interval_p99_s``: a run's start to its bid submitted; ``bids_per_day``:
the sustained rebid rate, with the backlog beside it) come from the real orchestrator and
workers on a private stack (:mod:`bench.bidding_workflow`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import timedelta

import numpy as np

from bench import bidding_workflow
from bench.results import RESULTS_DIR
from bidding.bids import ENERGY, Bid, response_bands
from bidding.market import SeriesPrices, SimulatedMarket
from bidding.optimiser import Battery, optimise
from core.config import Settings
from forecast.models import Model, MstlAr, PriceNaive
from forecast.series import Series
from vpp import dataset_series

BATTERY = Battery(power_mw=1.0, energy_mwh=2.0, round_trip=0.9, degradation_eur_per_mwh=1.0)
HORIZON = 24
WARMUP_WEEKS = 8
WEEK = 168
MODELS: dict[str, type[Model]] = {"naive": PriceNaive, "mstl": MstlAr}


@dataclass(frozen=True, slots=True)
class Week:
    """One week's revenue (EUR) per policy."""

    first: int
    perfect: float
    by_model: dict[str, float]


def _end_credit(series: Series, last: int, soc: float) -> float:
    day_mean = float(np.mean(series.values[last - 24:last]))
    surplus = soc - BATTERY.energy_mwh / 2
    return surplus * day_mean * (BATTERY.eta if surplus > 0 else 1 / BATTERY.eta)


def perfect_week(series: Series, first: int) -> float:
    """The perfect-foresight optimum of the week starting at step ``first``."""
    half = BATTERY.energy_mwh / 2
    plan = optimise(BATTERY, series.values[first:first + WEEK], 1.0, half, soc_end_min_mwh=half)
    return plan.value_eur + _end_credit(series, first + WEEK, float(plan.soc_mwh[-1]))


def bid_week(series: Series, first: int, model: Model) -> float:
    """Hourly bids on ``model``'s forecasts through the simulated market, for the week at ``first``."""
    market = SimulatedMarket(SeriesPrices({ENERGY: series}))
    fitted = model.fit(series.head(first))
    soc, revenue, half = BATTERY.energy_mwh / 2, 0.0, BATTERY.energy_mwh / 2
    for t in range(first, first + WEEK):
        start = series.time_at(t)
        history = series.head(t)  # prices cleared before this interval only
        forecast = fitted.forecast(history, HORIZON)
        curve = response_bands(BATTERY, forecast.mean, forecast.std, 1.0, soc, start, soc_end_min_mwh=half)
        market.submit(Bid("bench-battery", (curve,)), market.gate_closure(start) - timedelta(minutes=1))
        (clearing,) = market.clear(start)
        q = clearing.quantity_mw
        revenue += clearing.revenue_eur - BATTERY.degradation_eur_per_mwh * abs(q)
        soc += -q / BATTERY.eta if q > 0 else -q * BATTERY.eta
        soc = min(max(soc, 0.0), BATTERY.energy_mwh)  # the curve never asks for more; clip solver noise
    return revenue + _end_credit(series, first + WEEK, soc)


def optimise_ms(repeats: int) -> tuple[float, float]:
    """(first solve incl. compile, median re-solve) in ms: a day of 5-minute intervals, energy + reserve."""
    rng = np.random.default_rng(0)
    times = []
    for _ in range(repeats + 1):
        prices = rng.normal(40, 15, 288)
        reserve = rng.uniform(5, 20, 288)
        t0 = time.perf_counter()
        optimise(Battery(1.0, 2.0, degradation_eur_per_mwh=1.0), prices, 1 / 12, 1.0, reserve_price=reserve)
        times.append((time.perf_counter() - t0) * 1000)
    return times[0], float(np.median(times[1:]))


def run(quick: bool) -> dict[str, float]:
    """The figures of ``vpp bench bidding``; ``--quick`` runs 2 weeks instead of every week after warm-up,
    and 20 workflows instead of 300 (:mod:`bench.bidding_workflow`, offered at one a second)."""
    series = dataset_series.smard(Settings().datasets_dir, "DE", 2018)
    firsts = list(range(WARMUP_WEEKS * WEEK, len(series) - WEEK + 1, WEEK))
    if quick:
        firsts = firsts[:2]
    weeks = []
    for first in firsts:
        by_model = {name: bid_week(series, first, factory()) for name, factory in MODELS.items()}
        weeks.append(Week(first, perfect_week(series, first), by_model))
    compile_ms, solve_ms = optimise_ms(5 if quick else 20)
    perfect = sum(w.perfect for w in weeks)
    figures: dict[str, float] = {
        "weeks": float(len(weeks)),
        "perfect_revenue_eur": perfect,
        "optimise_ms": solve_ms,
        "optimise_first_ms": compile_ms,
    }
    for name in MODELS:
        earned = sum(w.by_model[name] for w in weeks)
        figures[f"{name}_revenue_eur"] = earned
        figures[f"{name}_value_of_perfect_information_eur"] = perfect - earned
        figures[f"{name}_weekly_mean_pct_of_perfect"] = float(np.mean(
            [100 * w.by_model[name] / w.perfect for w in weeks if w.perfect > 0]))
    figures.update(bidding_workflow.measure(20 if quick else 300, rate_per_s=1.0))
    figures["revenue_pct_of_perfect"] = 100 * figures["mstl_revenue_eur"] / perfect
    figures["naive_revenue_pct_of_perfect"] = 100 * figures["naive_revenue_eur"] / perfect
    table = [{"week_start": series.time_at(w.first).isoformat(), "perfect_eur": round(w.perfect, 2),
              **{f"{k}_eur": round(v, 2) for k, v in w.by_model.items()}} for w in weeks]
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "bidding-weeks.json").write_text(json.dumps(table, indent=2) + "\n")
    return figures
