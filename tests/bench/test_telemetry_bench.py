"""The telemetry benchmark: its parts on small inputs, and the quick CLI run (slow)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench import results, telemetry
from vpp.cli import app

DESIGN_KEYS = ("msgs_per_s_1proc", "msgs_per_s_2proc", "decode_only_msgs_per_s", "freshness_p50_s",
               "freshness_p99_s", "state_bytes_per_site")


def test_state_per_site_is_measured_from_pickled_shards() -> None:
    small = telemetry._state_bytes_per_site(200)
    assert 100 < small["state_bytes_per_site"] < 20_000, small
    assert small["shard_readings_per_cpu_s"] > 0


@pytest.mark.integration
def test_throughput_counts_every_preloaded_message() -> None:
    figures = telemetry._throughput(sites=200, seconds=3)
    assert figures["messages"] == 600
    # A run this short may take less than start-up on a busy machine: then NaN, never a made-up rate.
    for key in ("msgs_per_s_1proc", "msgs_per_s_2proc", "decode_only_msgs_per_s", "msgs_per_cpu_s_1proc",
                "msgs_per_cpu_s_2proc", "decode_only_msgs_per_cpu_s"):
        assert figures[key] > 0 or math.isnan(figures[key]), key


def test_a_run_shorter_than_start_up_gives_no_rate_rather_than_a_huge_one() -> None:
    assert math.isnan(telemetry._rate(1000, -0.5))
    assert telemetry._rate(1000, 0.5) == 2000
    assert telemetry._median([float("nan"), 3.0, 1.0]) == 2.0
    assert math.isnan(telemetry._median([float("nan")]))


@pytest.mark.slow
def test_quick_telemetry_bench_writes_the_design_keys(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(results, "RESULTS_DIR", tmp_path)
    outcome = CliRunner().invoke(app, ["bench", "telemetry", "--quick"])
    assert outcome.exit_code == 0, outcome.output
    written = json.loads((tmp_path / "telemetry.json").read_text())
    for key in DESIGN_KEYS:
        # Rates are NaN when a run took less than start-up (a short run on a busy machine).
        assert written[key] > 0 or (key.startswith(("msgs", "decode")) and math.isnan(written[key])), key
    assert written["quick"] is True
