"""`vpp bench assets --quick` reports the design's figures as JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench import results
from vpp.cli import app


def test_quick_assets_bench_writes_the_design_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(results, "RESULTS_DIR", tmp_path)
    outcome = CliRunner().invoke(app, ["bench", "assets", "--quick"])
    assert outcome.exit_code == 0, outcome.output
    record = json.loads((tmp_path / "assets.json").read_text())
    for key in ("load_sites_per_s", "members_at_t_ms", "cores", "python", "quick", "timestamp"):
        assert key in record
    assert record["quick"] is True
    assert record["members_at_t_sites"] == 1200


def test_unknown_bench_is_a_clear_error() -> None:
    outcome = CliRunner().invoke(app, ["bench", "nope"])
    assert outcome.exit_code == 2
    assert "unknown benchmark 'nope'" in outcome.output
