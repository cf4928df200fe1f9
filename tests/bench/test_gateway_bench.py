"""The gateway benchmark: a small run on the session stack, and the quick CLI run (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench import gateway, results
from core.config import Settings
from vpp.cli import app

DESIGN_KEYS = ("connections", "frames_per_s", "frames_per_s_per_core", "latency_p50_ms", "latency_p99_ms")


@pytest.mark.integration
def test_a_small_run_reports_the_design_figures(stack_settings: Settings) -> None:
    figures = gateway.measure(connections=20, phase_s=1.0, settings=stack_settings)
    for key in (*DESIGN_KEYS, "baseline_parse_frames_per_s"):
        assert figures[key] > 0, key
    assert figures["connections"] == 20
    assert figures["latency_samples"] >= 10
    assert figures["latency_p50_ms"] <= figures["latency_p99_ms"]


@pytest.mark.slow
def test_quick_gateway_bench_writes_the_design_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(results, "RESULTS_DIR", tmp_path)
    outcome = CliRunner().invoke(app, ["bench", "gateway", "--quick"])
    assert outcome.exit_code == 0, outcome.output
    record = json.loads((tmp_path / "gateway.json").read_text())
    for key in (*DESIGN_KEYS, "cores", "python", "quick", "timestamp"):
        assert key in record
    assert record["quick"] is True
