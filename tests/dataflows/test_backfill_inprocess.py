"""Backfill: sites cut off upload their buffers late, and history still equals brute force over every reading.

10% of the sites are unheard for two minutes, then upload what they held
oldest first at a bounded rate beside their live readings (some uploads twice),
so most of it arrives after its minutes closed: one minute that held their
last readings before the cut, one that was silent, and the minute of their
return, which closes before its start is uploaded. The site and node minutes
must equal the brute-force answer over all readings (none lost, none counted
twice), with one and two workers, and across a resume from a recovery store.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from bytewax.testing import TestingSource

from tests.dataflows.telemetry_harness import Captured, polled_input, recovery_store, run, settings_for
from tests.telemetry.compare import check_all
from tests.telemetry.outage import cut_off
from tests.telemetry.scenario import Scenario, generate


@pytest.fixture(scope="module")
def outage() -> tuple[Scenario, set[str]]:
    sc = generate(n_sites=120, minutes=4.25, seed=5)
    sc.too_late = []  # the readings no device re-sends are the real-stack test's concern
    return cut_off(sc, fraction=0.1, from_s=40, to_s=160, upload_per_s=2, seed=5)


def _problems(sc: Scenario, captured: Captured) -> list[str]:
    return check_all(sc, captured.nodes(), *captured.minutes(), sc.end_ms)


@pytest.mark.parametrize("workers", [1, 2])
def test_uploaded_buffers_complete_the_closed_minutes_exactly_once(
        outage: tuple[Scenario, set[str]], tmp_path: Path, workers: int) -> None:
    sc, cut = outage
    captured = run(settings_for(tmp_path), polled_input(sc), workers=workers)
    problems = _problems(sc, captured)
    assert problems == [], "\n".join(problems[:30])
    sites, _ = captured.minutes()
    # The cut-off sites' silent minute (60-120 s) exists only because of their uploads.
    assert all((site, sc.start_ms + 60_000) in sites for site in cut)


def test_without_backfill_the_uploads_are_left_out(outage: tuple[Scenario, set[str]], tmp_path: Path) -> None:
    sc, _ = outage
    settings = settings_for(tmp_path).model_copy(update={"backfill_horizon_s": 0.0})
    problems = _problems(sc, run(settings, polled_input(sc)))
    assert any("samples" in p for p in problems), "the scenario does make readings arrive late"


def test_a_resumed_run_backfills_the_same(outage: tuple[Scenario, set[str]], tmp_path: Path) -> None:
    sc, _ = outage
    polls = polled_input(sc)
    recovery = recovery_store(tmp_path / "recovery")
    cut = len(polls) * 2 // 3
    aborted: list[object] = [*polls[:cut], TestingSource.ABORT(), *polls[cut:]]
    captured = Captured()
    settings = settings_for(tmp_path)
    run(settings, aborted, recovery=recovery, captured=captured)  # type: ignore[arg-type]
    run(settings, aborted, recovery=recovery, captured=captured)  # type: ignore[arg-type]
    problems = _problems(sc, captured)
    assert problems == [], "\n".join(problems[:30])
