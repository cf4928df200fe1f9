"""The real plans dataflow over the real broker, Redis and history server.

Generated plans for a fleet in three hierarchies go to ``plans.site`` as Avro,
with the awkward cases: a replayed plan, a late plan (older than the one held),
a plan replacing an earlier one, plans from a stale forecast, implausible plans
(NaN, beyond the site's limits, below its reserve, for an unknown site, issued
in the future) and sites that go offline (their last plan carried, marked). The
live aggregate in Redis and ``node_plan`` in ClickHouse must equal a brute-force
sum of the latest accepted plans, and so must the newest NodePlan of each node
on ``plans.node``; every refused plan is a dead letter with its
reason. A second run resumes from the recovery store with more input (a replay
and a replacement), so the snapshot and the idempotent sinks are exercised too.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path

import pytest
import redis

from core import keys
from core.config import Settings
from core.history import HistoryStore, connect
from schemas import packaged_codec
from schemas.times import from_epoch_ms, wall_ms
from tests.conftest import local_settings
from tests.siteplan.plan_scenario import (
    MINUTE,
    STEP_MS,
    STEPS,
    compare,
    expected,
    latest_node_plans,
    plan,
    scenario,
)
from tests.telemetry import flowrun
from vpp.dataflows import dataflow_argv, ensure_recovery, settings_env
from vpp.stack import running

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def plans_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    settings = local_settings(tmp_path_factory.mktemp("plans-stack"), default_partitions=2)
    with running(settings):
        yield settings


def _run(settings: Settings, recovery: Path) -> None:
    ensure_recovery(recovery)
    bounded = settings.model_copy(update={"dataflow_tail": False, "snapshot_interval_s": 1})
    env = {**os.environ, **settings_env(bounded)}
    process = subprocess.run(dataflow_argv("plans", bounded, 1, recovery), env=env, capture_output=True,
                             timeout=180, check=False)
    assert process.returncode == 0, (process.stdout + process.stderr).decode(errors="replace")[-3000:]


def _live(settings: Settings) -> dict[str, dict[str, str]]:
    client = redis.Redis.from_url(settings.redis, decode_responses=True)
    hashes = {}
    for key in client.scan_iter(keys.node_plan("*"), count=1000):
        fields = client.hgetall(key)
        hashes[str(key).removeprefix(keys.node_plan(""))] = {str(k): str(v) for k, v in fields.items()}
    client.close()
    return hashes


def test_aggregate_plans_equal_the_brute_force_sum_and_refused_plans_are_dead_letters(
        plans_stack: Settings, tmp_path: Path) -> None:
    settings = plans_stack
    now = wall_ms()
    specs, data = scenario(now)
    data.produce(settings)
    recovery = tmp_path / "recovery"
    _run(settings, recovery)

    first = len(data.messages)
    rng = random.Random(3)
    replay = data.accepted[specs[5].site_id][-1]
    data.plan(replay)  # replayed after a restart: changes nothing
    data.plan(plan(specs[7], "site-007-c", wall_ms() - MINUTE, now - now % STEP_MS, rng, now))
    data.produce(settings, first)
    _run(settings, recovery)

    live = _live(settings)
    start_ms = int(next(iter(live.values()))["start_ms"])
    computed = int(next(iter(live.values()))["computed_at"])
    reference = expected(specs, data, start_ms, computed - int(settings.plans_stale_after_s * 1000))
    assert any(a["stale"] for a in reference.values())
    assert any(any(a["carried_n"]) for a in reference.values())
    problems = compare(live, reference)
    assert problems == [], "\n".join(problems[:30])
    region = live["region-0"]
    assert json.loads(region["coverage"])[0] == pytest.approx(
        reference["region-0"]["planned_n"][0] / reference["region-0"]["expected"])

    history = connect(settings)
    rows = history.query(f"SELECT node_id, interval_start, planned_kw, estimate_kw, planned_sites, "
                         f"carried_sites, expected_sites FROM {settings.clickhouse_database}.node_plan FINAL "
                         "WHERE interval_start >= %(start)s", parameters={"start": from_epoch_ms(start_ms)})
    by_key = {(r[0], int(r[1].replace(tzinfo=UTC).timestamp() * 1000)): r for r in rows.result_rows}
    for node, want in reference.items():
        for k in range(STEPS):
            row = by_key[(node, start_ms + k * STEP_MS)]
            assert row[2] == pytest.approx(want["planned"][k], abs=1e-9), (node, k)
            assert row[3] == pytest.approx(want["estimate"][k], abs=1e-9), (node, k)
            assert (row[4], row[5], row[6]) == (want["planned_n"][k], want["carried_n"][k], want["expected"])
    site_rows = history.query(f"SELECT site_id, plan_id FROM {settings.clickhouse_database}.site_plan FINAL")
    stored = {(r[0], r[1]) for r in site_rows.result_rows}
    store = HistoryStore(history, settings.clickhouse_database)
    (latest,) = store.site_plans(specs[7].site_id, from_epoch_ms(0), from_epoch_ms(now + 3_600_000),
                                 latest_only=True)
    history.close()
    assert latest.plan_id == "site-007-c" and len(latest.power_kw) == STEPS
    # Every plan that entered the book once (new or replacing), each once: the late ones never did.
    entered = {(p["site_id"], p["plan_id"]) for plans in data.accepted.values() for p in plans
               if not p["plan_id"].endswith("-0")}
    assert stored == entered

    codec = packaged_codec()
    messages = flowrun.read_to_end(settings, "plans.node")
    announced = [codec.decode(m.value(), "NodePlan") for m in messages]
    problems = compare(latest_node_plans(announced), reference)
    assert problems == [], "plans.node: " + "\n".join(problems[:30])
    assert [m.key() for m in messages] == [a["node_id"].encode() for a in announced]
    letters = [codec.decode(m.value(), "DeadLetter") for m in flowrun.read_to_end(settings, "telemetry.dlq")]
    kinds = {codec.decode(bytes(d["original_value"]), "SitePlan")["plan_id"]: d["error_kind"]
             for d in letters}
    assert kinds == data.refused
    assert all(d["consumer"] == "dataflows.plans" and d["error"] for d in letters)
