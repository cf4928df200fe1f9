"""`vpp fleet generate` loads a fleet into the running stack, or says to start it."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from typer.testing import CliRunner

from core.config import Settings
from tests.conftest import free_port
from vpp.cli import app

pytestmark = pytest.mark.integration


def _env(settings: Settings) -> dict[str, str]:
    return {
        "VPP_DATA_DIR": str(settings.data_dir),
        "VPP_KAFKA_PORT": str(settings.kafka_port),
        "VPP_REDIS_PORT": str(settings.redis_port),
        "VPP_CLICKHOUSE_PORT": str(settings.clickhouse_port),
    }


def test_fleet_generate_loads_the_stack(stack_settings: Settings) -> None:
    outcome = CliRunner().invoke(app, ["fleet", "generate", "--sites", "300", "--seed", "5"],
                                 env=_env(stack_settings))
    assert outcome.exit_code == 0, outcome.output
    assert "loaded 300 sites" in " ".join(outcome.output.split())
    with redis.Redis.from_url(stack_settings.redis, decode_responses=True) as rds:
        assert rds.scard("node:region-0:sites") >= 300
        assert rds.smembers("node:feeder-0-0:parents") == {"substation-0-0"}


def test_fleet_generate_without_a_stack_says_to_start_it(tmp_path: Path) -> None:
    dead = Settings(data_dir=tmp_path, kafka_port=free_port(), redis_port=free_port(),
                    clickhouse_port=free_port())
    outcome = CliRunner().invoke(app, ["fleet", "generate", "--sites", "10"], env=_env(dead))
    assert outcome.exit_code == 1
    assert "vpp stack up" in outcome.output
