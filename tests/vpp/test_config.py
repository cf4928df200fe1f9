"""Settings come from VPP_* variables; local defaults need nothing set."""

from __future__ import annotations

import pytest

from core.config import Settings


def test_local_defaults_need_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(__import__("os").environ):
        if name.startswith("VPP_"):
            monkeypatch.delenv(name)
    settings = Settings()
    assert settings.kafka == "127.0.0.1:19092"
    assert settings.redis == "redis://127.0.0.1:16379/0"
    assert settings.clickhouse == "http://127.0.0.1:18123"
    assert settings.partitions_of("telemetry.raw") == 4


def test_environment_points_at_production_services(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VPP_KAFKA_BOOTSTRAP", "kafka-0:9092,kafka-1:9092")
    monkeypatch.setenv("VPP_REDIS_URL", "redis://redis:6379/2")
    monkeypatch.setenv("VPP_CLICKHOUSE_URL", "https://ch.example:8443")
    monkeypatch.setenv("VPP_TOPIC_PARTITIONS", '{"telemetry.raw": 24}')
    monkeypatch.setenv("VPP_DEFAULT_PARTITIONS", "6")
    settings = Settings()
    assert settings.kafka == "kafka-0:9092,kafka-1:9092"
    assert settings.redis == "redis://redis:6379/2"
    assert settings.clickhouse == "https://ch.example:8443"
    assert settings.partitions_of("telemetry.raw") == 24
    assert settings.partitions_of("commands.site") == 6


def test_invalid_port_is_refused_with_the_variable_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VPP_REDIS_PORT", "70000")
    with pytest.raises(ValueError, match="redis_port"):
        Settings()
