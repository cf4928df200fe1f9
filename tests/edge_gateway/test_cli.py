"""`vpp token`, `vpp simulate` and the `python -m` entry points."""

from __future__ import annotations

import subprocess
import sys

import pytest
import redis
from typer.testing import CliRunner

from core import history
from core.config import Settings
from core.device_tokens import verify_token
from core.revocations import REVOKED_KEY
from vpp.cli import app


def _env(settings: Settings) -> dict[str, str]:
    return {"VPP_DATA_DIR": str(settings.data_dir), "VPP_KAFKA_PORT": str(settings.kafka_port),
            "VPP_REDIS_PORT": str(settings.redis_port), "VPP_CLICKHOUSE_PORT": str(settings.clickhouse_port)}


@pytest.mark.integration
def test_issue_then_revoke_a_token(stack_settings: Settings) -> None:
    runner = CliRunner()
    issued = runner.invoke(app, ["token", "issue", "site-cli", "--ttl-hours", "2", "--region", "region-1"],
                           env=_env(stack_settings))
    assert issued.exit_code == 0, issued.output
    claims = verify_token(stack_settings, issued.output.strip().splitlines()[-1])
    assert (claims.site_id, claims.region) == ("site-cli", "region-1")
    assert claims.jti in issued.output
    revoked = runner.invoke(app, ["token", "revoke", claims.jti], env=_env(stack_settings))
    assert revoked.exit_code == 0, revoked.output
    with redis.Redis.from_url(stack_settings.redis) as rds:
        assert rds.sismember(REVOKED_KEY, claims.jti)
    client = history.connect(stack_settings)
    assert history.HistoryStore(client).is_revoked(claims.jti)  # durable, not only in Redis
    client.close()
    again = runner.invoke(app, ["token", "revoke", claims.jti], env=_env(stack_settings))
    assert "already revoked" in again.output


@pytest.mark.integration
def test_simulate_over_kafka_runs_for_its_duration_and_reports(stack_settings: Settings) -> None:
    outcome = CliRunner().invoke(app, ["simulate", "--transport", "kafka", "--sites", "3", "--speed", "10",
                                       "--duration", "2"], env=_env(stack_settings))
    assert outcome.exit_code == 0, outcome.output
    assert "simulating 3 sites over kafka" in outcome.output
    assert "telemetry=" in outcome.output and "telemetry=0," not in outcome.output


def test_simulate_refuses_an_unknown_transport() -> None:
    outcome = CliRunner().invoke(app, ["simulate", "--transport", "carrier-pigeon"])
    assert outcome.exit_code == 2


@pytest.mark.parametrize("module", ["edge_gateway", "edge_gateway.simulate"])
def test_the_modules_run_as_programs(module: str) -> None:
    outcome = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True,
                             timeout=60, check=False)
    assert outcome.returncode == 0, outcome.stderr
    assert "--port" in outcome.stdout if module == "edge_gateway" else "--transport" in outcome.stdout
