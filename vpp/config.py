"""One typed settings object for every process, read from ``VPP_*`` variables.

Local defaults need nothing set: the broker, Redis and the embedded history
server listen on 127.0.0.1 at the ports below and keep their state under
``VPP_DATA_DIR`` (default ``./.vpp``). Production points the same code at real
services by setting ``VPP_KAFKA_BOOTSTRAP``, ``VPP_REDIS_URL`` and
``VPP_CLICKHOUSE_URL``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every setting of the platform; each field is ``VPP_<FIELD>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="VPP_", extra="ignore")

    data_dir: Path = Field(
        default=Path(".vpp"),
        description="Where the local stack keeps its state, logs and pid files (VPP_DATA_DIR).",
    )
    host: str = Field(default="127.0.0.1", description="Interface the local stack binds (VPP_HOST).")
    kafka_port: int = Field(default=19092, ge=1, le=65535, description="Local broker port (VPP_KAFKA_PORT).")
    redis_port: int = Field(default=16379, ge=1, le=65535, description="Local Redis port (VPP_REDIS_PORT).")
    clickhouse_port: int = Field(
        default=18123, ge=1, le=65535, description="Local history server port (VPP_CLICKHOUSE_PORT)."
    )
    kafka_bootstrap: str | None = Field(
        default=None,
        description="Kafka bootstrap servers; unset means the local broker (VPP_KAFKA_BOOTSTRAP).",
    )
    redis_url: str | None = Field(
        default=None, description="Redis URL; unset means the local redis-server (VPP_REDIS_URL)."
    )
    clickhouse_url: str | None = Field(
        default=None,
        description="ClickHouse HTTP URL; unset means the embedded history server (VPP_CLICKHOUSE_URL).",
    )
    clickhouse_database: str = Field(
        default="vpp", description="ClickHouse database holding the history tables (VPP_CLICKHOUSE_DATABASE)."
    )
    default_partitions: int = Field(
        default=4,
        ge=1,
        le=1024,
        description="Partitions of each topic unless overridden (VPP_DEFAULT_PARTITIONS).",
    )
    topic_partitions: dict[str, int] = Field(
        default_factory=dict,
        description='Per-topic partition counts as JSON, e.g. {"telemetry.raw": 12} (VPP_TOPIC_PARTITIONS).',
    )
    replication_factor: int = Field(
        default=1, ge=1, le=16, description="Replication factor of created topics (VPP_REPLICATION_FACTOR)."
    )
    startup_timeout_s: float = Field(
        default=30.0, gt=0, description="How long `vpp stack up` waits for each part to be healthy."
    )

    @property
    def kafka(self) -> str:
        """Bootstrap servers the clients use."""
        return self.kafka_bootstrap or f"{self.host}:{self.kafka_port}"

    @property
    def redis(self) -> str:
        """Redis URL the clients use."""
        return self.redis_url or f"redis://{self.host}:{self.redis_port}/0"

    @property
    def clickhouse(self) -> str:
        """ClickHouse HTTP URL the clients use."""
        return self.clickhouse_url or f"http://{self.host}:{self.clickhouse_port}"

    def partitions_of(self, topic: str) -> int:
        """Partition count for ``topic``: the per-topic override or the default."""
        return self.topic_partitions.get(topic, self.default_partitions)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
