"""The end-to-end benchmark: its figures from runs, and a small real run's JSON (slow)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench import e2e, results
from vpp.cli import app


def test_the_largest_size_that_held_and_the_cpu_of_the_largest_tried_are_reported() -> None:
    runs = [e2e.Run(100, held=True, coverage_min=1.0, freshness_p99_s=0.8, warmup_s=3.0,
                    cores={"simulator": 0.1, "gateway": 0.1}),
            e2e.Run(200, held=False, coverage_min=0.97, freshness_p99_s=3.1, warmup_s=4.0,
                    cores={"simulator": 0.3, "gateway": 0.1, "telemetry": 0.2, "broker": 0.2, "redis": 0.1,
                           "history": 0.1}, readings_per_s=200.0)]
    figures = e2e.figures_of(runs, 60.0)
    assert figures["e2e_sites_1hz"] == 100
    assert figures["cpu_sites"] == 200 and figures["cpu_cores_total"] == pytest.approx(1.0)
    assert figures["cpu_share_simulator_pct"] == pytest.approx(30.0)
    assert sum(figures[f"cpu_share_{part}_pct"] for part in e2e.PARTS) == pytest.approx(100.0)
    assert figures["coverage_min_pct_200"] == pytest.approx(97.0)
    assert figures["readings_per_s"] == 200.0
    assert figures["cpu_us_per_reading_simulator"] == pytest.approx(1500.0)  # 0.3 cores over 200 readings/s
    assert e2e.figures_of([e2e.Run(50, problem="never reached full coverage")], 60.0)["e2e_sites_1hz"] == 0


def test_cpu_seconds_of_a_process_and_of_none() -> None:
    assert (e2e.cpu_seconds(os.getpid()) or 0.0) > 0.0
    assert e2e.cpu_seconds(2**22 + 12_345) is None


@pytest.mark.slow
@pytest.mark.integration
def test_quick_bench_writes_its_figures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(results, "RESULTS_DIR", tmp_path)
    monkeypatch.setenv("VPP_BENCH_E2E_SITES", "50")
    monkeypatch.setenv("VPP_BENCH_E2E_MINUTES", "0.1")
    outcome = CliRunner().invoke(app, ["bench", "e2e", "--quick"])
    assert outcome.exit_code == 0, outcome.output
    figures = json.loads((tmp_path / "e2e.json").read_text())
    assert figures["quick"] is True and figures["sizes_tried"] == 1
    assert figures["e2e_sites_1hz"] in (0, 50)
    for part in e2e.PARTS:
        assert figures[f"cpu_cores_{part}"] >= 0 and f"cpu_share_{part}_pct" in figures
