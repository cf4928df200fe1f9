"""``vpp bench forecast`` and ``vpp forecast backtest``: rolling-origin backtests on real series.

Data sets (fetched and pinned by ``vpp datasets fetch``):

- ``taylor``: England & Wales demand, half-hourly; the last 4 weeks as daily
  origins, 48 half-hours ahead (the issue's set-up), against same-slot-last-week.
- ``smard:ZONE:YEAR``: day-ahead prices, hourly; daily origins at local midnight
  for the next 24 hours, against the price naive (last week's for Mon/Sat/Sun,
  yesterday's otherwise). The full run uses every day after the first 8 weeks.
- ``simbench:COLUMN``: a SimBench profile at 15 minutes, day ahead (96 steps),
  against same-slot-last-week; the full run uses every day after the first 8 weeks.

Every model refits weekly (every 7 origins) and forecasts daily from its cached
fit; the harness audits two origins per model for look-ahead. The naive runs in
the same backtest, so rMAE compares like with like.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path

from core.config import Settings
from forecast import backtest
from forecast.models import HoltWinters, Model, MstlAr, PriceNaive, Sarimax, SeasonalNaive
from forecast.series import Series
from vpp import dataset_series

RESULTS_DIR = Path(__file__).parent / "results"
REFIT_EVERY = 7
WARMUP_DAYS = 56  # the MSTL window: every model sees at least eight weeks before its first origin
SIMBENCH_FEEDER = "mv_urban_pload"

ModelFactory = Callable[[], Model]
MODELS: dict[str, ModelFactory] = {
    "mstl": MstlAr,
    "holt-winters": HoltWinters,
    "sarimax": Sarimax,
}


@dataclass(frozen=True, slots=True)
class Dataset:
    """A loaded series and how it is backtested."""

    spec: str
    series: Series
    naive: Model
    horizon: int

    def plan(self, days: int | None, audits: int = 2) -> backtest.Plan:
        """``days`` daily origins at the end, or every day after the warm-up when ``None``."""
        per_day = self.series.per(timedelta(days=1))
        available = (len(self.series) - self.horizon) // per_day - WARMUP_DAYS + 1
        return backtest.Plan.daily(self.series, min(days or available, available), self.horizon, REFIT_EVERY,
                                   audits)


def load(spec: str, datasets_dir: Path) -> Dataset:
    """``taylor``, ``simbench:COLUMN`` or ``smard:ZONE:YEAR``."""
    kind, _, rest = spec.partition(":")
    if kind == "taylor" and not rest:
        return Dataset(spec, dataset_series.taylor(datasets_dir), SeasonalNaive(), 48)
    if kind == "simbench" and rest:
        return Dataset(spec, dataset_series.simbench(datasets_dir, rest), SeasonalNaive(), 96)
    if kind == "smard" and rest.count(":") == 1:
        zone, year = rest.split(":")
        return Dataset(spec, dataset_series.smard(datasets_dir, zone, int(year)), PriceNaive(), 24)
    raise ValueError(f"unknown dataset {spec!r}: use taylor, simbench:COLUMN or smard:ZONE:YEAR")


@dataclass(frozen=True, slots=True)
class ModelReport:
    """One model's backtest: errors by horizon bucket, timings, notes (fallbacks)."""

    model: str
    buckets: list[backtest.BucketError]
    refit_s: float
    forecast_ms: float
    refits: int
    notes: list[str]

    @property
    def overall(self) -> backtest.BucketError:
        """The row over every horizon."""
        return self.buckets[-1]


@dataclass(frozen=True, slots=True)
class Report:
    """A data set's backtest: every model, the naive first."""

    dataset: str
    origins: int
    horizon: int
    step_min: float
    models: list[ModelReport]

    def best(self) -> ModelReport:
        """The fitted model with the lowest MAE over all horizons (never the naive)."""
        return min(self.models[1:], key=lambda m: m.overall.mae)

    def to_json(self) -> dict[str, object]:
        """A plain dict for bench/results."""
        return asdict(self)


def run_backtest(dataset: Dataset, model_names: list[str], days: int | None,
                 progress: Callable[[str], None] = lambda _: None, audits: int = 2) -> Report:
    """Backtest the naive and each named model on the same plan (``audits`` look-ahead audits each)."""
    unknown = set(model_names) - set(MODELS)
    if unknown:
        raise ValueError(f"unknown model(s) {sorted(unknown)}; one of {sorted(MODELS)}")
    plan = dataset.plan(days, audits)
    progress(f"{dataset.spec}: naive over {len(plan.origins)} origins")
    naive = backtest.run(dataset.series, dataset.naive, plan)
    runs = [naive]
    for name in model_names:
        progress(f"{dataset.spec}: {name} over {len(plan.origins)} origins, refit every {plan.refit_every}")
        runs.append(backtest.run(dataset.series, MODELS[name](), plan))
    reports = [
        ModelReport(run.model, backtest.score(dataset.series, run, naive, plan), backtest.median(run.fit_s),
                    backtest.median(run.forecast_ms), len(run.fit_s), sorted(run.notes))
        for run in runs
    ]
    return Report(dataset.spec, len(plan.origins), plan.horizon,
                  dataset.series.step.total_seconds() / 60, reports)


def write_report(report: Report) -> Path:
    """bench/results/forecast-backtest-<dataset>.json."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"forecast-backtest-{report.dataset.replace(':', '-')}.json"
    path.write_text(json.dumps(report.to_json(), indent=2) + "\n")
    return path


def run(quick: bool) -> dict[str, float]:
    """The figures of ``vpp bench forecast``.

    ``--quick``: 28 origins for Taylor and SMARD, 7 for SimBench, one look-ahead audit per model
    (at the first origin) instead of two.
    """
    datasets_dir = Settings().datasets_dir
    models = list(MODELS)
    audits = 1 if quick else 2
    figures: dict[str, float] = {}
    taylor = run_backtest(load("taylor", datasets_dir), models, 28, audits=audits)
    smard = run_backtest(load("smard:DE:2018", datasets_dir), models, 28 if quick else None, audits=audits)
    simbench = run_backtest(load(f"simbench:{SIMBENCH_FEEDER}", datasets_dir), models, 7 if quick else None,
                            audits=audits)
    for report in (taylor, smard, simbench):
        write_report(report)
    best = taylor.best()
    figures["taylor_mape_pct"] = best.overall.mape_pct or float("nan")
    figures["taylor_naive_mape_pct"] = taylor.models[0].overall.mape_pct or float("nan")
    figures["taylor_worst_bucket_rmae"] = max(b.rmae for b in best.buckets)
    figures["smard_de_2018_rmae"] = smard.best().overall.rmae
    figures["simbench_mase"] = simbench.best().overall.mase
    figures["simbench_rmae"] = simbench.best().overall.rmae
    figures["simbench_naive_mase"] = simbench.models[0].overall.mase
    slowest = max((m for r in (taylor, smard, simbench) for m in r.models[1:]), key=lambda m: m.refit_s)
    figures["refit_s"] = slowest.refit_s
    figures["predict_ms"] = max(m.forecast_ms for r in (taylor, smard, simbench) for m in r.models[1:])
    for report in (taylor, smard, simbench):
        for model in report.models[1:]:
            key = report.dataset.split(":")[0]
            figures[f"{key}_{model.model.replace('-', '_')}_rmae"] = model.overall.rmae
    figures["origins_smard"] = float(smard.origins)
    figures["origins_simbench"] = float(simbench.origins)
    return figures
