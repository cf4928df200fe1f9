"""One typed settings object for every process, read from ``VPP_*`` variables.

Local defaults need nothing set: the broker, Redis and the embedded history
server listen on 127.0.0.1 at the ports below and keep their state under
``VPP_DATA_DIR`` (default: :func:`default_data_dir`, not the working
directory). Production points the same code at real services by setting
``VPP_KAFKA_BOOTSTRAP``, ``VPP_REDIS_URL`` and ``VPP_CLICKHOUSE_URL``. Token
secrets have no default: the local stack generates them per data directory,
anything else must set them (:mod:`core.local_secrets`).
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.jwt_keys import SigningKeys
from core.local_secrets import MissingSecretError, local_secrets, resolve_keys
from core.logs import LogFormat, LogLevel
from core.plausibility import Rules


def default_data_dir() -> Path:
    """The local stack's directory when VPP_DATA_DIR is unset, independent of the working directory.

    The nearest ``.vpp`` from the working directory up (a checkout's own stack, run from inside it),
    else the ``.vpp`` of the source checkout this code runs from (``vpp status`` from anywhere finds the
    stack ``./scripts/up`` started), else ``$XDG_STATE_HOME/vpp`` (``~/.local/state/vpp``) for an
    installed package.
    """
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / ".vpp").is_dir():
            return folder / ".vpp"
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "pyproject.toml").is_file():
        return checkout / ".vpp"
    return Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "vpp"


def _cache_home() -> Path:
    """The user's cache directory: $XDG_CACHE_HOME, else ~/.cache."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")


class Settings(BaseSettings):
    """Every setting of the platform; each field is ``VPP_<FIELD>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="VPP_", extra="ignore")

    data_dir: Path = Field(
        default_factory=default_data_dir,
        description="Where the local stack keeps its state, logs and pid files (VPP_DATA_DIR; default: the "
        "nearest .vpp from the working directory up, else the source checkout's .vpp, else "
        "$XDG_STATE_HOME/vpp or ~/.local/state/vpp): the same stack whatever directory a command runs in.",
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
        default=120.0, gt=0,
        description="How long `vpp up` waits for each running part to be healthy (a part that exits fails "
        "at once). Importing the API or a dataflow took over 30 s on a 2-core machine under heavy load, "
        "and `vpp up` then failed with every part healthy a little later.",
    )
    telemetry_shards: int = Field(
        default=32, ge=1, le=4096,
        description="Site shards of the telemetry dataflow: the unit of keyed state and of parallelism. "
        "Fixed for the life of a recovery store.",
    )
    telemetry_node_groups: int = Field(
        default=16, ge=1, le=4096,
        description="Node groups of the telemetry dataflow (keyed state of the rollups). "
        "Fixed for the life of a recovery store.",
    )
    emit_interval_s: float = Field(
        default=1.0, gt=0,
        description="A node emits its aggregate at most once per interval, and site twins are written to "
        "Redis at this pace: the latency versus message volume trade-off (VPP_EMIT_INTERVAL_S).",
    )
    telemetry_interval_s: float = Field(
        default=1.0, gt=0, description="How often a site is expected to report; sets minute coverage."
    )
    delayed_after_s: float = Field(
        default=5.0, gt=0, description="A site with no telemetry for this long is DELAYED."
    )
    offline_after_s: float = Field(
        default=60.0, gt=0, description="A site with no telemetry for this long is OFFLINE."
    )
    allowed_lateness_s: float = Field(
        default=30.0, ge=0,
        description="A minute window closes this long (event time) after its end; later readings are "
        "counted as late and left out of history.",
    )
    catch_up_after_s: float = Field(
        default=10.0, gt=0,
        description="A shard whose event-time clock lags the wall clock by more than this is catching up "
        "on a backlog and ticks every VPP_CATCH_UP_TICK_S instead of twice per emission interval.",
    )
    catch_up_tick_s: float = Field(
        default=5.0, gt=0, description="Tick interval of a shard while it catches up on a backlog."
    )
    partition_idle_s: float = Field(
        default=10.0, gt=0,
        description="An input partition silent this long stops holding back the event-time clock.",
    )
    shard_stall_s: float = Field(
        default=6.0, gt=0,
        description="A gap longer than this between two turns of a telemetry shard counts only this long "
        "towards partition_idle_s: the shard was stalled (starved of CPU, blocked in a sink), not its "
        "partitions silent, and their readings may be waiting in the backlog. Longer than the catch-up "
        "tick.",
    )
    dataflow_tail: bool = Field(
        default=True,
        description="Dataflows wait for new input at the end of their topics; false makes them stop "
        "at the end (replays, tests, benchmarks).",
    )
    snapshot_interval_s: int = Field(
        default=5, ge=1, description="Bytewax snapshot (epoch) interval of the local dataflows, seconds."
    )
    kafka_batch_size: int = Field(
        default=10000, ge=1, description="Messages a dataflow reads from one partition per poll."
    )
    telemetry_fetch_wait_ms: int = Field(
        default=500, ge=1, le=5_000,
        description="Longest time the broker holds a fetch of the telemetry dataflow (librdkafka "
        "fetch.wait.max.ms; VPP_TELEMETRY_FETCH_WAIT_MS). The local broker holds every fetch for half "
        "of it (all of it below 250 ms), so a reading waits that long on its way to the twin; "
        "shorter means more fetches for the broker to answer. At 10,000 sites live, 100 ms cost the broker "
        "0.06 cores and the flow 0.04 more and left the aggregates' freshness p99 where it was (1.59 s; "
        "1.55-1.74 s at 500): the tail is not the fetch wait, so the default stays.",
    )
    control_tick_s: float = Field(
        default=0.5, gt=0,
        description="Wall-clock seconds between two looks of an active dispatch at the twin (retries due, "
        "correction due, end of window).",
    )
    control_correction_s: float = Field(
        default=5.0, gt=0,
        description="Seconds (fleet event time) between two corrections and status reports of a dispatch.",
    )
    control_gain: float = Field(
        default=0.7, gt=0, le=1, description="Share of the measured error one correction step removes."
    )
    control_max_step_fraction: float = Field(
        default=0.25, gt=0, le=1,
        description="Largest correction step as a fraction of the target: bounds how hard a correction "
        "pushes the fleet.",
    )
    control_retry_base_s: float = Field(
        default=2.0, gt=0, description="First retry of an unacknowledged command after this many seconds; "
        "the wait doubles with each attempt."
    )
    control_retry_max_s: float = Field(
        default=30.0, gt=0, description="Longest wait between two attempts of a command."
    )
    gateway_port: int = Field(default=8765, ge=1, le=65535, description="Edge gateway WebSocket port.")
    gateway_metrics_port: int = Field(
        default=9108, ge=1, le=65535, description="Edge gateway /healthz and /metrics port."
    )
    gateway_token_secret: SecretStr | None = Field(
        default=None,
        description="HS256 secret of device tokens (VPP_GATEWAY_TOKEN_SECRET); no default: unset, the "
        "local stack generates one per data directory and any other deployment refuses to start "
        "(core.local_secrets). Read it through gateway_keys().",
    )
    gateway_token_ttl_hours: float = Field(
        default=24.0 * 30, gt=0, description="Lifetime of an issued device token in hours."
    )
    gateway_max_frame_bytes: int = Field(
        default=64 * 1024, ge=256, description="Largest device frame; bigger ones close with 1009."
    )
    gateway_rate_per_s: float = Field(
        default=10.0, gt=0, description="Sustained frames per second a device connection may send."
    )
    gateway_rate_burst: float = Field(
        default=30.0, ge=1, description="Frames a device connection may send in one burst."
    )
    gateway_route_ttl_s: float = Field(
        default=15.0, gt=0, description="Lifetime of a gateway:route:{site} entry without a heartbeat."
    )
    gateway_heartbeat_s: float = Field(
        default=2.0, gt=0,
        description="How often an instance refreshes its routes and closes revoked or expired connections.",
    )
    gateway_consumer_group: str = Field(
        default="vpp-gateway", description="Kafka consumer group the instances share for commands.site."
    )
    api_port: int = Field(default=8000, ge=1, le=65535,
                          description="HTTP API and dashboard port (VPP_API_PORT).")
    api_token_secret: SecretStr | None = Field(
        default=None,
        description="HS256 secret of API bearer tokens (VPP_API_TOKEN_SECRET); no default, as for "
        "VPP_GATEWAY_TOKEN_SECRET. Read it through api_keys().",
    )
    api_token_ttl_hours: float = Field(
        default=24.0 * 30, gt=0,
        description="Lifetime of an issued API token in hours (VPP_API_TOKEN_TTL_HOURS)."
    )
    api_registry_refresh_s: float = Field(
        default=30.0, gt=0,
        description="The API re-reads the asset registry from ClickHouse at most this often, for "
        "navigation at past times and asset changes made by other processes (VPP_API_REGISTRY_REFRESH_S).",
    )
    simulator_interval_s: float = Field(
        default=1.0, gt=0, description="Simulated seconds between two telemetry samples of a site."
    )
    simulator_speed: float = Field(
        default=1.0, gt=0, description="How many times faster than the wall clock simulated time runs."
    )

    plausible_max_site_kw: float = Field(
        default=100.0, gt=0,
        description="No power field of a home site's reading may exceed this, registered or not "
        "(VPP_PLAUSIBLE_MAX_SITE_KW).",
    )
    plausible_rating_margin: float = Field(
        default=1.25, ge=1.0,
        description="Battery power may exceed the site's registered rating by this factor "
        "(VPP_PLAUSIBLE_RATING_MARGIN).",
    )
    plausible_max_ahead_s: float = Field(
        default=10.0, gt=0,
        description="A device's event time may be at most this far ahead of the checker's clock "
        "(clock skew); an accelerated simulation needs more (VPP_PLAUSIBLE_MAX_AHEAD_S).",
    )
    plausible_max_behind_h: float = Field(
        default=168.0, gt=0,
        description="A device's event time may be at most this old: the store-and-forward horizon "
        "(VPP_PLAUSIBLE_MAX_BEHIND_H).",
    )
    control_claim_margin: float = Field(
        default=2.0, ge=0,
        description="A dispatch claims free sites (most capable first) until they can give this many times "
        "its target, leaving the rest of the node to other dispatches; 0 claims every free site "
        "(VPP_CONTROL_CLAIM_MARGIN).",
    )

    production: bool = Field(
        default=False,
        description="Marks a deployment that is not the local stack even if it names no external service "
        "(VPP_PRODUCTION): token secrets must then be set, never generated. Setting VPP_KAFKA_BOOTSTRAP, "
        "VPP_REDIS_URL or VPP_CLICKHOUSE_URL has the same effect.",
    )
    gateway_token_secret_previous: SecretStr | None = Field(
        default=None,
        description="The device-token secret before the last rotation: tokens it signed still verify "
        "until it is unset (VPP_GATEWAY_TOKEN_SECRET_PREVIOUS).",
    )
    api_token_secret_previous: SecretStr | None = Field(
        default=None,
        description="The API-token secret before the last rotation: tokens it signed still verify "
        "until it is unset (VPP_API_TOKEN_SECRET_PREVIOUS).",
    )
    gateway_revocations_refresh_s: float = Field(
        default=30.0, gt=0,
        description="How often a gateway re-reads the durable revocation list into Redis "
        "(VPP_GATEWAY_REVOCATIONS_REFRESH_S).",
    )
    gateway_revocations_max_age_s: float = Field(
        default=300.0, gt=0,
        description="A gateway refuses new connections (503) while its last successful read of the "
        "durable revocation list is older than this: it fails closed (VPP_GATEWAY_REVOCATIONS_MAX_AGE_S).",
    )
    gateway_limits_refresh_s: float = Field(
        default=60.0, gt=0,
        description="How often a gateway re-reads the sites' registered power ratings from the asset "
        "registry (VPP_GATEWAY_LIMITS_REFRESH_S).",
    )

    gateway_max_handshakes: int = Field(
        default=200, ge=1,
        description="Handshakes a gateway authenticates at once; a connection beyond them is closed at once "
        "with 1013 (try again later) and a retry hint, rather than queued behind work the gateway cannot "
        "finish (VPP_GATEWAY_MAX_HANDSHAKES).",
    )
    gateway_produce_stall_s: float = Field(
        default=15.0, gt=0,
        description="A gateway whose Kafka producer has records waiting and no delivery report for this "
        "long is not ready (/readyz 503), so the load balancer sends devices elsewhere "
        "(VPP_GATEWAY_PRODUCE_STALL_S).",
    )
    gateway_linger_ms: int = Field(
        default=100, ge=0, le=1_000,
        description="How long the gateway's Kafka producer gathers records into one produce request "
        "(librdkafka linger.ms; VPP_GATEWAY_LINGER_MS). Fewer, larger batches cost a broker less: the local "
        "memory-only broker's CPU grows with the batches it holds (each fetch lists them all), and at "
        "10,000 records/s it used 0.68 cores after 4.5 minutes at 5 ms, 0.12 at 50 ms and 0.07 at 100 ms. "
        "A reading waits up to this long more on its way to the telemetry dataflow.",
    )
    gateway_revocation_check_timeout_s: float = Field(
        default=2.0, gt=0,
        description="How long a gateway's handshake waits for Redis to say whether a token is revoked before "
        "it answers from its in-memory copy of the durable list (VPP_GATEWAY_REVOCATION_CHECK_TIMEOUT_S).",
    )
    gateway_busy_retry_s: float = Field(
        default=5.0, gt=0,
        description="The retry hint a gateway busy with handshakes gives in its 1013 close reason, seconds "
        "(VPP_GATEWAY_BUSY_RETRY_S).",
    )

    datasets_dir: Path = Field(
        default_factory=lambda: _cache_home() / "vpp" / "datasets",
        description="Where `vpp datasets fetch` extracts the pinned real series; outside the checkout, "
        "so fresh clones on the same machine reuse it (VPP_DATASETS_DIR; default "
        "$XDG_CACHE_HOME/vpp/datasets or ~/.cache/vpp/datasets).",
    )
    control_outcome_tolerance: float = Field(
        default=0.1, ge=0, le=1,
        description="A dispatch ends COMPLETED only if the energy it delivered is within this fraction of "
        "the energy requested; otherwise PARTIAL or FAILED, with the reason (VPP_CONTROL_OUTCOME_TOLERANCE).",
    )
    clickhouse_user: str = Field(
        default="default", min_length=1,
        description="ClickHouse user every client connects as; the embedded history server accepts only "
        "this one (VPP_CLICKHOUSE_USER).",
    )
    clickhouse_password: SecretStr | None = Field(
        default=None,
        description="Password of VPP_CLICKHOUSE_USER (VPP_CLICKHOUSE_PASSWORD); the embedded history server "
        "reads the same variable. Unset on the local stack, it is generated once into the data directory's "
        "secrets.json (core.local_secrets) and every local process uses that one; outside it "
        "(VPP_PRODUCTION or VPP_CLICKHOUSE_URL set) it must be set, here or in the URL: read it through "
        "clickhouse_credentials().",
    )

    def clickhouse_credentials(self) -> tuple[str, str] | None:
        """(user, password) for ClickHouse, None when VPP_CLICKHOUSE_URL carries them (user:password@host).

        On the local stack an unset password is the one generated into the data directory (the history
        server gets the same); elsewhere MissingSecretError if it is set nowhere.
        """
        if self.clickhouse_url is not None and urlsplit(self.clickhouse_url).username:
            return None
        if self.clickhouse_password is not None:
            return self.clickhouse_user, self.clickhouse_password.get_secret_value()
        if self.is_local:
            return self.clickhouse_user, local_secrets(self.data_dir)["clickhouse_password"]
        raise MissingSecretError("VPP_CLICKHOUSE_PASSWORD is not set: outside the local stack "
                                 "(VPP_PRODUCTION, VPP_KAFKA_BOOTSTRAP, VPP_REDIS_URL or VPP_CLICKHOUSE_URL "
                                 "set) ClickHouse needs a password (on Kubernetes from a Secret)")

    market_price_series: str = Field(
        default="smard:DE:2018",
        description="The real price series the local simulated day-ahead market replays onto the current "
        "calendar, as smard:ZONE:YEAR from `vpp datasets fetch`; empty refuses to start the market feed "
        "(VPP_MARKET_PRICE_SERIES).",
    )
    market_history_weeks: int = Field(
        default=8, ge=2,
        description="Weeks of past prices the market feed writes when it starts, enough for the price "
        "models (VPP_MARKET_HISTORY_WEEKS).",
    )
    market_publish_time: str = Field(
        default="12:45", pattern=r"^\d{2}:\d{2}$",
        description="Local time (of the series' zone) at which the next day's day-ahead prices are "
        "published (VPP_MARKET_PUBLISH_TIME).",
    )
    forecast_every_min: int = Field(
        default=15, ge=1,
        description="Minutes between the forecast service's rounds in `vpp up` (VPP_FORECAST_EVERY_MIN).",
    )

    log_format: LogFormat = Field(
        default="text",
        description="How every process writes its log to stderr: `text` (one readable line per event) or "
        "`json` (one JSON object per line, for a log shipper) (VPP_LOG_FORMAT).",
    )
    log_level: LogLevel = Field(
        default="INFO",
        description="The least severe records every process logs: DEBUG, INFO, WARNING, ERROR or CRITICAL, "
        "any case (VPP_LOG_LEVEL).",
    )

    telemetry_metrics_port: int = Field(
        default=3030, ge=1, le=65535,
        description="Port of the local telemetry dataflow's /metrics (Bytewax's dataflow API, which binds "
        "every interface; Kubernetes uses 3030 in each pod) (VPP_TELEMETRY_METRICS_PORT).",
    )
    control_metrics_port: int = Field(
        default=3031, ge=1, le=65535,
        description="Port of the local control dataflow's /metrics (VPP_CONTROL_METRICS_PORT).",
    )

    @field_validator("log_format", "log_level", mode="before")
    @classmethod
    def _log_case(cls, value: object, info: ValidationInfo) -> object:
        """VPP_LOG_LEVEL=debug and VPP_LOG_FORMAT=JSON mean what they say."""
        if not isinstance(value, str):
            return value
        return value.upper() if info.field_name == "log_level" else value.lower()

    plans_emit_interval_s: float = Field(
        default=1.0, gt=0,
        description="While plans keep coming, the plans dataflow re-aggregates the latest site plans and "
        "writes the changed nodes' plans to Redis at most this often (VPP_PLANS_EMIT_INTERVAL_S).",
    )
    plans_settle_s: float = Field(
        default=0.1, gt=0,
        description="Once the plans dataflow's input has paused this long after a change (a burst has "
        "ended), it re-aggregates without waiting for the rest of VPP_PLANS_EMIT_INTERVAL_S; so "
        "aggregations are at least this far apart (VPP_PLANS_SETTLE_S).",
    )
    plans_horizon_steps: int = Field(
        default=96, ge=1, le=2880,
        description="Intervals of the aggregate plan from the current one (VPP_PLANS_HORIZON_STEPS).",
    )
    plans_interval_minutes: int = Field(
        default=15, ge=1, le=1440,
        description="Length of an aggregate plan interval in minutes (VPP_PLANS_INTERVAL_MINUTES).",
    )
    plans_history_interval_s: float = Field(
        default=60.0, gt=0,
        description="At most this often the changed nodes' aggregate plans are written to ClickHouse "
        "node_plan (VPP_PLANS_HISTORY_INTERVAL_S).",
    )
    plans_stale_after_s: float = Field(
        default=3600.0, gt=0,
        description="A plan made from a price forecast older than this counts as stale "
        "(VPP_PLANS_STALE_AFTER_S).",
    )

    bid_fetch_deadline_s: float = Field(
        default=20.0, gt=0,
        description="Seconds after a bidding workflow starts by which its market data must be in; later, the "
        "run goes on with the last good market data, flagged (VPP_BID_FETCH_DEADLINE_S).",
    )
    bid_forecast_deadline_s: float = Field(
        default=40.0, gt=0,
        description="Seconds after a bidding workflow starts by which every product's forecast must be in; "
        "later, the run submits a safe bid that holds the state of charge (VPP_BID_FORECAST_DEADLINE_S).",
    )
    bid_task_timeout_s: float = Field(
        default=10.0, gt=0,
        description="Seconds the orchestrator waits for one attempt of a bidding task before it issues the "
        "next attempt (VPP_BID_TASK_TIMEOUT_S).",
    )
    bid_max_attempts: int = Field(
        default=3, ge=1,
        description="Attempts of each bidding task before the step counts as failed (VPP_BID_MAX_ATTEMPTS).",
    )
    bid_gate_lead_s: float = Field(
        default=300.0, ge=0,
        description="Seconds before an interval's start at which the (simulated) market's gate closes for "
        "it (VPP_BID_GATE_LEAD_S).",
    )
    bid_history_days: int = Field(
        default=7, ge=2,
        description="Days of market prices the bidding workflow's fetch step reads (VPP_BID_HISTORY_DAYS).",
    )
    bid_horizon_steps: int = Field(
        default=24, ge=2,
        description="Market intervals the bid optimiser looks ahead (VPP_BID_HORIZON_STEPS).",
    )

    backfill_horizon_s: float = Field(
        default=900.0, ge=0,
        description="How far behind the closed minutes (event time) a late reading, such as a device's "
        "store-and-forward upload after an outage, still completes its site and node minutes in history; "
        "older ones are counted as late and left out. Node minutes are kept this long too "
        "(VPP_BACKFILL_HORIZON_S; 0 turns backfill off).",
    )

    bid_assets: str = Field(
        default="",
        description="Assets the bid scheduler (`vpp bid schedule`, started by `vpp up`) bids every "
        "VPP_BID_EVERY_S, comma-separated: battery ids (1 MW / 2 MWh) or VPP nodes as node:NODE_ID. Empty "
        "(the default): the scheduler starts no runs (VPP_BID_ASSETS).",
    )
    bid_every_s: float = Field(
        default=300.0, gt=0,
        description="The bid scheduler's cadence: one run per asset per slot of this many seconds, for the "
        "next interval whose gate is open; several slots before one market interval are its rebids "
        "(VPP_BID_EVERY_S).",
    )
    bid_region: str = Field(
        default="",
        description="Price region the bid scheduler bids in; empty: the first region with published prices "
        "(VPP_BID_REGION).",
    )
    telemetry_probe_port: int = Field(
        default=3040, ge=0, le=65535,
        description="Port of the telemetry dataflow's /livez and /readyz, bound on VPP_HOST (0: none) "
        "(VPP_TELEMETRY_PROBE_PORT).",
    )
    control_probe_port: int = Field(
        default=3041, ge=0, le=65535,
        description="Port of the control dataflow's /livez and /readyz (0: none) (VPP_CONTROL_PROBE_PORT).",
    )
    plans_probe_port: int = Field(
        default=3042, ge=0, le=65535,
        description="Port of the plans dataflow's /livez and /readyz (0: none) (VPP_PLANS_PROBE_PORT).",
    )
    bidding_probe_port: int = Field(
        default=3043, ge=0, le=65535,
        description="Port of the bidding orchestrator's /livez and /readyz (0: none) "
        "(VPP_BIDDING_PROBE_PORT).",
    )
    dataflow_stall_s: float = Field(
        default=15.0, gt=0,
        description="A dataflow whose worker has not polled its input for this long, or whose write to "
        "Redis or ClickHouse has hung this long, is not ready (/readyz 503) (VPP_DATAFLOW_STALL_S).",
    )
    gateway_producer_replace_s: float = Field(
        default=30.0, gt=0,
        description="A gateway whose Kafka producer has records waiting and no delivery report for this long "
        "replaces it: the old one is purged, its records reported failed (the devices send them again), "
        "and the gateway stays not ready until the new one reaches the broker "
        "(VPP_GATEWAY_PRODUCER_REPLACE_S).",
    )
    dataflow_live_stall_s: float = Field(
        default=300.0, gt=0,
        description="A dataflow whose worker has not polled its input for this long while no dependency "
        "is failing is wedged: /livez answers 503, so Kubernetes restarts it (VPP_DATAFLOW_LIVE_STALL_S).",
    )
    metrics_port: int | None = Field(
        default=None, ge=1, le=65535,
        description="Where a long-running service without a web server of its own (the bidding worker, "
        "the forecast service, the simulated market) serves Prometheus /metrics, on VPP_HOST; unset, it "
        "serves none (VPP_METRICS_PORT; the k8s pods set 3030, the port the dataflow pods use).",
    )

    def plausibility(self) -> Rules:
        """The bounds every boundary checks device records against (core.plausibility)."""
        return Rules(max_site_kw=self.plausible_max_site_kw, rating_margin=self.plausible_rating_margin,
                     max_ahead_ms=round(self.plausible_max_ahead_s * 1000),
                     max_behind_ms=round(self.plausible_max_behind_h * 3_600_000))

    @property
    def is_local(self) -> bool:
        """True for the local stack: not VPP_PRODUCTION and no external Kafka, Redis or ClickHouse."""
        return not self.production and not (self.kafka_bootstrap or self.redis_url or self.clickhouse_url)

    def gateway_keys(self) -> SigningKeys:
        """The device-token keys; MissingSecretError outside the local stack if the secret is unset."""
        return resolve_keys("gateway_token_secret", self.gateway_token_secret,
                            self.gateway_token_secret_previous, local=self.is_local, data_dir=self.data_dir)

    def api_keys(self) -> SigningKeys:
        """The API-token keys; MissingSecretError outside the local stack if the secret is unset."""
        return resolve_keys("api_token_secret", self.api_token_secret, self.api_token_secret_previous,
                            local=self.is_local, data_dir=self.data_dir)

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
