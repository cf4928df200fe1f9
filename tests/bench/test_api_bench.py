"""`vpp bench api --quick` writes the design's figures (a private stack; about 20 s)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench import results
from vpp.cli import app

DESIGN_KEYS = ("live_p50_ms", "live_p99_ms", "live_max_rps", "history_year_day_ms")


@pytest.mark.integration
def test_quick_api_bench_writes_the_design_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(results, "RESULTS_DIR", tmp_path)
    outcome = CliRunner().invoke(app, ["bench", "api", "--quick"])
    assert outcome.exit_code == 0, outcome.output
    record = json.loads((tmp_path / "api.json").read_text())
    for key in (*DESIGN_KEYS, "cores", "python", "quick", "timestamp"):
        assert key in record, key
    assert record["quick"] is True
    assert record["history_rows"] == 365 and record["history_sites"] == 10_000
    assert 0 < record["live_p50_ms"] <= record["live_p99_ms"]
    assert record["live_cpu_us_per_req"] > 0  # the API process's own CPU was read
