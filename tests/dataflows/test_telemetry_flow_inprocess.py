"""The telemetry dataflow's own wiring, run in this process on TestingSource: 1 and 2 workers, resume.

The same brute-force reference as the real-stack tests (tests/integration/
test_telemetry_flow.py, which keep one run per concern over Kafka, Redis and
ClickHouse); here the flow runs in milliseconds-to-seconds, so the properties
that need several runs (worker counts, an interrupted run) are cheap to check.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from bytewax.testing import TestingSource

from schemas import packaged_codec
from tests.dataflows.telemetry_harness import (
    Captured,
    polled_input,
    recovery_store,
    run,
    settings_for,
    snapshots_taken,
)
from tests.telemetry.compare import check_all
from tests.telemetry.scenario import Scenario, generate


@pytest.fixture(scope="module")
def scenario() -> Scenario:
    sc = generate(n_sites=120, minutes=4.25, seed=3)
    sc.too_late = []  # "too late" depends on the order partitions are read in; the real-stack test covers it
    return sc


def _problems(sc: Scenario, captured: Captured) -> list[str]:
    return check_all(sc, captured.nodes(), *captured.minutes(), sc.end_ms)


@pytest.mark.parametrize("workers", [1, 2])
def test_aggregates_and_minutes_equal_brute_force(scenario: Scenario, tmp_path: Path, workers: int) -> None:
    captured = run(settings_for(tmp_path), polled_input(scenario), workers=workers)
    problems = _problems(scenario, captured)
    assert problems == [], "\n".join(problems[:30])
    assert len(captured.sites()) == len(scenario.sites)


def test_bad_records_become_dead_letters_and_the_flow_goes_on(scenario: Scenario, tmp_path: Path) -> None:
    good = packaged_codec().encode("SiteTelemetry", scenario.readings[0])
    poison: list[tuple[bytes | None, bytes]] = [(b"noise", b"\x07not avro"), (b"site-0001", good[:9]),
                                                (b"site-other", good)]
    captured = run(settings_for(tmp_path), polled_input(scenario, poison))
    letters = [packaged_codec().decode(m.value, "DeadLetter") for m in captured.kafka
               if m.topic == "telemetry.dlq"]
    assert sorted(bytes(d["original_value"]) for d in letters) == sorted(v for _, v in poison)
    assert _problems(scenario, captured) == []


def test_resumed_from_recovery_it_ends_as_an_uninterrupted_run(scenario: Scenario, tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    polls = polled_input(scenario)
    uninterrupted = run(settings, polls)

    recovery = recovery_store(tmp_path / "recovery")
    half = len(polls) // 2
    aborted: list[object] = [*polls[:half], TestingSource.ABORT(), *polls[half:]]
    captured = Captured()
    run(settings, aborted, recovery=recovery, captured=captured)  # type: ignore[arg-type]
    assert captured.history, "the first attempt ran before it was aborted"
    assert snapshots_taken(recovery) > 0, "so the second attempt resumes mid-way, not from scratch"
    run(settings, aborted, recovery=recovery, captured=captured)  # type: ignore[arg-type]

    assert _problems(scenario, captured) == []
    assert captured.minutes() == uninterrupted.minutes() or _same_minutes(captured, uninterrupted)
    # Live sums are exact (fixed point), so a resumed run ends on the very same aggregates.
    assert _live_fields(captured) == _live_fields(uninterrupted)


def _same_minutes(a: Captured, b: Captured) -> bool:
    """Minute rows equal in every field but the write version (a resumed run writes them later)."""
    def strip(rows: dict[tuple[str, int], object]) -> dict[tuple[str, int], tuple[object, ...]]:
        return {key: tuple(v for name, v in vars(row).items() if name != "version")
                for key, row in rows.items()}
    (sa, na), (sb, nb) = a.minutes(), b.minutes()
    return strip(sa) == strip(sb) and strip(na) == strip(nb)  # type: ignore[arg-type]


def _live_fields(captured: Captured) -> dict[str, dict[str, object]]:
    bookkeeping = {"seq", "updated_at", "_vb", "oldest_knowledge_age_s", "node_id", "hierarchy", "node_kind"}
    return {node: {k: v for k, v in fields.items() if k not in bookkeeping}
            for node, fields in captured.nodes().items()}
