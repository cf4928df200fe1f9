"""The CLI for scripts and from anywhere: --json that parses, --version, a data directory not tied to cwd."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from typer.testing import CliRunner

from core import keys
from core.config import Settings, default_data_dir
from vpp.cli import app

CHECKOUT = Path(__file__).resolve().parents[2]


def _env(**extra: str) -> dict[str, str | None]:
    """For CliRunner: no VPP_* variable of this process's own, only ``extra``."""
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("VPP_")}
    env.update(extra)
    return env


def test_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("vpp "), result.output


def test_the_data_directory_does_not_depend_on_the_working_directory(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert default_data_dir() == CHECKOUT / ".vpp", "outside any stack: the checkout's own"
    (tmp_path / "project" / ".vpp").mkdir(parents=True)
    deep = tmp_path / "project" / "a" / "b"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    assert default_data_dir() == tmp_path / "project" / ".vpp", "inside a tree with a stack: that one"


def test_status_from_another_directory_says_where_it_looked_and_fails(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    empty = tmp_path / "no-stack-here"
    runner = CliRunner()
    result = runner.invoke(app, ["status", "--json"], env=_env(VPP_DATA_DIR=str(empty), COLUMNS="200"))
    assert result.exit_code == 1, result.stderr
    document = json.loads(result.stdout)
    assert document["data_dir"] == str(empty.resolve())
    assert {part["state"] for part in document["parts"]} == {"stopped"}
    assert str(empty.resolve()) in " ".join(result.stderr.split())
    from_elsewhere = runner.invoke(app, ["status", "--json"], env=_env(COLUMNS="200"))
    assert json.loads(from_elsewhere.stdout)["data_dir"] == str(CHECKOUT / ".vpp")


@pytest.mark.integration
def test_live_and_dispatch_json_parse(stack_settings: Settings) -> None:
    env = {"VPP_REDIS_PORT": str(stack_settings.redis_port), "VPP_DATA_DIR": str(stack_settings.data_dir)}
    client = redis.Redis.from_url(stack_settings.redis)
    node = "json-test-node"
    aggregate: dict[Any, Any] = {"node_id": node, "node_kind": "jsontestkind", "expected_sites": 10,
                                 "reporting_sites": 9,
                 "coverage": 0.9, "battery_kw": 12.5, "est_battery_kw": 14.0, "energy_available_kwh": 50.0,
                 "est_energy_available_kwh": 55.0, "oldest_knowledge_age_s": 3.0,
                 "event_time": 1_700_000_000_000}
    client.hset(keys.node(node), mapping=aggregate)
    fresh = "json-test-fresh"  # the same aggregate, written 2 s ago
    client.hset(keys.node(fresh), mapping={**aggregate, "node_id": fresh,
                                           "event_time": int((time.time() - 2) * 1000)})
    client.hset(keys.dispatch_status("d-json-test"), mapping={
        "state": "PARTIAL", "node_id": node, "target_kw": 10.0, "delivered_kwh": 1.25, "requested_kwh": 2.5,
        "sites_total": 4, "start": 1_700_000_000_000, "end": 1_700_000_600_000, "reason": "delivered less"})
    client.zadd(keys.DISPATCH_INDEX, {"d-json-test": 1_700_000_000_000})
    runner = CliRunner()
    try:
        live = runner.invoke(app, ["live", "--kinds", "jsontestkind", "--json"], env=env)
        assert live.exit_code == 0, live.output
        rows = {row["node_id"]: row for row in json.loads(live.output)}
        assert (rows[fresh]["coverage"], rows[fresh]["stale"]) == (0.9, False)
        row = rows[node]
        assert row["event_time"].startswith("2023-11-14T22:13:20") and row["pipeline_lag_s"] > 0
        # years behind: a stopped pipeline vouches for no site (issue 18), whatever it last said
        assert (row["coverage"], row["stale"], row["reporting"]) == (0.0, True, 9)
        listed = runner.invoke(app, ["dispatch", "list", "--json"], env=env)
        assert listed.exit_code == 0, listed.output
        assert "d-json-test" in [d["dispatch_id"] for d in json.loads(listed.output)]
        status = runner.invoke(app, ["dispatch", "status", "d-json-test", "--json"], env=env)
        assert status.exit_code == 0, status.output
        document = json.loads(status.output)
        assert document["state"] == "PARTIAL" and document["delivered_kwh"] == 1.25
        assert document["sites_total"] == 4 and document["start"].startswith("2023-11-14T22:13:20")
        unknown = runner.invoke(app, ["dispatch", "status", "d-unknown-json", "--json"], env=env)
        assert unknown.exit_code == 1, "an unknown dispatch is an error, not a wait"
    finally:
        client.delete(keys.node(node), keys.node(fresh), keys.dispatch_status("d-json-test"))
        client.zrem(keys.DISPATCH_INDEX, "d-json-test")
        client.close()
