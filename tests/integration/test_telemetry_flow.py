"""The real telemetry dataflow over the real broker, Redis and history server.

Each test gets a stack of its own (the dataflow reads its topics from the
beginning, so it must not see other tests' records). The generated scenario and
its brute-force answer live in :mod:`tests.telemetry.scenario`.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import signal
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from core.config import Settings
from core.waiting import wait_until
from schemas import packaged_codec
from tests.conftest import local_settings
from tests.telemetry import flowrun
from tests.telemetry.compare import check_all
from tests.telemetry.scenario import Scenario, generate, recent_start_ms
from vpp.stack import running

pytestmark = pytest.mark.integration

#: Fields of a node hash that say when or how often it was written, not what it says.
WRITE_BOOKKEEPING = {"seq", "updated_at", "_vb", "oldest_knowledge_age_s"}


@contextmanager
def _stack(data_dir: Path) -> Iterator[Settings]:
    settings = local_settings(data_dir, default_partitions=3, topic_partitions={"telemetry.raw": 6},
                              telemetry_shards=8, telemetry_node_groups=4)
    with running(settings):
        yield settings


@pytest.fixture
def own_stack(tmp_path: Path) -> Iterator[Settings]:
    with _stack(tmp_path / "stack") as settings:
        yield settings


def _poison(sc: Scenario, n: int, seed: int = 1) -> list[tuple[bytes | None, bytes]]:
    """Random bytes, truncated records and a record under another site's key."""
    rng = random.Random(seed)
    codec = packaged_codec()
    good = codec.encode("SiteTelemetry", sc.readings[0])
    bad: list[tuple[bytes | None, bytes]] = []
    for i in range(n):
        kind = i % 4
        if kind == 0:
            bad.append((b"noise", rng.randbytes(rng.randrange(1, 80))))
        elif kind == 1:
            bad.append((sc.readings[0]["site_id"].encode(), good[: rng.randrange(6, len(good) - 1)]))
        elif kind == 2:
            bad.append((None, b"\x00" + rng.randbytes(4) + good[5:]))
        else:
            bad.append((b"site-other", good))
    return bad


Rows = dict[tuple[str, int], dict[str, object]]


def _snapshots(recovery: Path) -> int:
    """State snapshots in a recovery store so far (readable while the dataflow writes them)."""
    total = 0
    for part in recovery.glob("part-*.sqlite3"):
        with contextlib.closing(sqlite3.connect(f"file:{part}?mode=ro", uri=True, timeout=5)) as db:
            total += int(db.execute("SELECT count(*) FROM snaps").fetchone()[0])
    return total


def _results(settings: Settings) -> tuple[dict[str, dict[str, object]], Rows, Rows]:
    return (flowrun.live_nodes(settings), flowrun.minute_rows(settings, "site_minute", "site_id"),
            flowrun.minute_rows(settings, "node_minute", "node_id"))


def test_aggregates_and_minutes_equal_brute_force_and_every_bad_record_is_a_dead_letter(
        own_stack: Settings, tmp_path: Path) -> None:
    sc = generate(n_sites=300, minutes=6.25, start_ms=recent_start_ms(6.25))
    poison = _poison(sc, 40)
    flowrun.produce(own_stack, sc, poison)
    flowrun.run_with_late_data(own_stack, sc, tmp_path / "recovery")

    nodes, site_rows, node_rows = _results(own_stack)
    assert check_all(sc, nodes, site_rows, node_rows, sc.end_ms) == []
    sites = flowrun.live_sites(own_stack)
    assert len(sites) == len(sc.sites)
    assert {s["status"] for s in sites.values()} == {"ONLINE", "DELAYED", "OFFLINE"}

    codec = packaged_codec()
    letters = [codec.decode(m.value(), "DeadLetter") for m in flowrun.read_topic(own_stack, "telemetry.dlq")]
    assert len(letters) == len(poison)
    assert sorted(bytes(d["original_value"]) for d in letters) == sorted(v for _, v in poison)
    kinds = {d["error_kind"] for d in letters}
    assert {"WRONG_MAGIC", "TRUNCATED", "KEY_MISMATCH"} <= kinds, kinds
    assert all(d["error"] and d["topic"] == "telemetry.raw" and d["offset"] >= 0 for d in letters)


def test_two_processes_give_the_brute_force_answer(own_stack: Settings) -> None:
    sc = generate(n_sites=300, minutes=6.25, seed=5, start_ms=recent_start_ms(6.25))
    sc.too_late = []  # "too late" needs the two-phase run of the tests above; here: the cluster
    flowrun.produce(own_stack, sc)
    flowrun.run_processes_to_end(own_stack, processes=2)
    problems = check_all(sc, *_results(own_stack), sc.end_ms)
    assert problems == [], "\n".join(problems[:40])


def test_killed_and_restarted_with_two_workers_it_writes_what_an_uninterrupted_run_writes(
        tmp_path: Path) -> None:
    sc = generate(n_sites=300, minutes=6.25, seed=11, start_ms=recent_start_ms(6.25))
    with _stack(tmp_path / "uninterrupted") as settings:
        flowrun.produce(settings, sc)
        flowrun.run_with_late_data(settings, sc, tmp_path / "recovery-a")
        uninterrupted = _results(settings)
    assert check_all(sc, *uninterrupted, sc.end_ms) == []

    with _stack(tmp_path / "killed") as settings:
        flowrun.produce(settings, sc)
        recovery = tmp_path / "recovery-b"
        # Slow the first attempt down (tiny polls) so it is surely killed mid-stream.
        process = flowrun.start(settings, recovery=recovery, VPP_KAFKA_BATCH_SIZE="5")
        # Kill it once it wrote minutes and took a snapshot after them: mid-stream, with something to resume.
        assert wait_until(lambda: bool(flowrun.minute_rows(settings, "site_minute", "site_id"))
                          and _snapshots(recovery) >= 2, timeout_s=180, interval_s=0.1)
        assert process.poll() is None, (
            "the dataflow ended before it could be killed: "
            + (process.communicate()[0] or b"").decode(errors="replace")[-2000:])
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        partial = flowrun.minute_rows(settings, "site_minute", "site_id")
        assert 0 < len(partial) < len(uninterrupted[1])
        flowrun.run_with_late_data(settings, sc, recovery, workers=2)
        restarted = _results(settings)
    problems = check_all(sc, *restarted, sc.end_ms)
    assert problems == [], "\n".join(problems[:40])

    # Sums reached through other batches may differ in the last bits of a float, nothing more.
    assert set(restarted[0]) == set(uninterrupted[0])
    for node, fields in uninterrupted[0].items():
        again = restarted[0][node]
        assert set(again) == set(fields)
        for name, value in fields.items():
            if name in WRITE_BOOKKEEPING:
                continue
            other = again[name]
            if isinstance(value, float) and isinstance(other, float):
                assert math.isclose(other, value, rel_tol=1e-9, abs_tol=1e-6), (node, name)
            else:
                assert again[name] == value, (node, name)
    assert set(restarted[1]) == set(uninterrupted[1])
    assert set(restarted[2]) == set(uninterrupted[2])
    for key, row in uninterrupted[1].items():
        assert restarted[1][key] == row, key
