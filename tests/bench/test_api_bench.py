"""`vpp bench api` writes the design's figures: the CLI path on a private stack, at test size.

The bench proves here that it runs and writes its keys, not what it measures:
the test runs ``measure`` through the CLI with 1 s load phases, one counted
history query and 200 sites of history (the quick run: 5 s phases, 10,000 sites).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench import api as api_bench
from bench import results
from vpp.cli import app

DESIGN_KEYS = ("live_p50_ms", "live_p99_ms", "live_max_rps", "history_year_day_ms")
SITES = 200


@pytest.mark.integration
def test_quick_api_bench_writes_the_design_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(results, "RESULTS_DIR", tmp_path)
    monkeypatch.setattr(api_bench, "run", lambda quick: api_bench.measure(load_s=1.0, history_queries=1,
                                                                          sites=SITES))
    outcome = CliRunner().invoke(app, ["bench", "api", "--quick"])
    assert outcome.exit_code == 0, outcome.output
    record = json.loads((tmp_path / "api.json").read_text())
    for key in (*DESIGN_KEYS, "cores", "python", "quick", "timestamp"):
        assert key in record, key
    assert record["quick"] is True
    assert record["history_rows"] == 365 and record["history_sites"] == SITES
    assert 0 < record["live_p50_ms"] <= record["live_p99_ms"]
    assert record["live_cpu_us_per_req"] > 0  # the API process's own CPU was read
