"""`vpp bench NAME` knows every benchmark it names, and refuses others saying which exist."""

from __future__ import annotations

import importlib

from typer.testing import CliRunner

from vpp.cli import BENCHMARKS, app


def test_every_named_benchmark_is_a_bench_module_with_run() -> None:
    for name in BENCHMARKS:
        assert callable(importlib.import_module(f"bench.{name}").run), name


def test_an_unknown_benchmark_is_refused_with_the_known_ones() -> None:
    result = CliRunner().invoke(app, ["bench", "nope"])
    assert result.exit_code == 2
    assert "unknown benchmark 'nope'" in result.output and "peak" in result.output
