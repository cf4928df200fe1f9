"""`vpp forecast backtest` and `vpp bench forecast` on the real pinned series (small plans)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench import forecast as forecast_bench
from bench import results
from core.config import Settings
from vpp.cli import app

DESIGN_KEYS = ("taylor_mape_pct", "taylor_naive_mape_pct", "smard_de_2018_rmae", "simbench_mase",
               "refit_s", "predict_ms")


def test_dataset_specs_are_parsed_or_refused() -> None:
    datasets_dir = Settings().datasets_dir
    assert forecast_bench.load("smard:DE:2018", datasets_dir).horizon == 24
    assert forecast_bench.load("simbench:mv_urban_pload", datasets_dir).horizon == 96
    with pytest.raises(ValueError, match="unknown dataset"):
        forecast_bench.load("taylor:extra", datasets_dir)


def test_backtest_command_prints_a_table_by_horizon_and_writes_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(forecast_bench, "RESULTS_DIR", tmp_path)
    outcome = CliRunner().invoke(app, ["forecast", "backtest", "--dataset", "smard:DE:2018",
                                       "--model", "holt-winters", "--days", "3"])
    assert outcome.exit_code == 0, outcome.output
    assert "12h-24h" in outcome.output and "holt-winters" in outcome.output
    record = json.loads((tmp_path / "forecast-backtest-smard-DE-2018.json").read_text())
    assert [m["model"] for m in record["models"]] == ["naive", "holt-winters"]
    assert all(b["mape_pct"] is None for m in record["models"] for b in m["buckets"])  # prices cross zero


def test_an_unknown_model_is_refused() -> None:
    outcome = CliRunner().invoke(app, ["forecast", "backtest", "--dataset", "taylor", "--model", "oracle"])
    assert outcome.exit_code == 1 and "unknown model" in outcome.output


@pytest.mark.slow
def test_quick_forecast_bench_writes_the_design_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(results, "RESULTS_DIR", tmp_path)
    monkeypatch.setattr(forecast_bench, "RESULTS_DIR", tmp_path)
    outcome = CliRunner().invoke(app, ["bench", "forecast", "--quick"])
    assert outcome.exit_code == 0, outcome.output
    record = json.loads((tmp_path / "forecast.json").read_text())
    for key in (*DESIGN_KEYS, "cores", "quick"):
        assert key in record, key
    assert record["taylor_naive_mape_pct"] == pytest.approx(2.15, abs=0.01)
